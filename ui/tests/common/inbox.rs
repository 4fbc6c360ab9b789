//! What the Inbox app's tests share: a post on the test kit's relay (its real handler and
//! directory log, in this process) with a staff device enrolled through the log as the authority
//! does it and registered, a user who wrote to the post, and the Inbox app over that staff
//! device's store, its connections routed to the kit.

use super::PASSPHRASE;
use i_slint_backend_testing::{AccessibleRole, ElementHandle, ElementRoot};
use refuge_client::app::{InboxClient, InboxSettings, PollSchedule, UserClient, UserSettings};
use refuge_client::authority;
use refuge_client::config::PolicySource;
use refuge_client::events::Events;
use refuge_client::secret::SecretText;
use refuge_client::staff::encode_request;
use refuge_client::store::{KdfParams, Passphrase};
use refuge_client::transport::{Dial, DialFuture, Reader, Writer};
use refuge_testkit::fixtures::{self, POST};
use refuge_testkit::{TestRelay, VirtualClock};
use refuge_ui::InboxWindow;
use refuge_ui::inbox::worker::{self, Update};
use refuge_ui::inbox::{InboxApp, Options};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

pub const DESK: &str = "emb-xx/desk-1";
/// A colleague's device of the same post ([`Post::enrol_colleague`]).
pub const DESK2: &str = "emb-xx/desk-2";

/// Every connection a client makes goes to `kit` (none reaches Tor or a socket).
pub fn dialer(kit: &TestRelay) -> Arc<dyn Dial> {
    let kit = kit.clone();
    Arc::new(move |_isolation: &[u8]| -> DialFuture {
        let dialled = kit.dial();
        Box::pin(async move {
            let stream = dialled?;
            let (reader, writer) = tokio::io::split(stream);
            Ok((Box::new(reader) as Reader, Box::new(writer) as Writer))
        })
    })
}

/// Every connection goes to the relay `route` holds at the time of the dial (a test swaps in
/// another relay to play one that serves a log the policy does not trust).
pub fn dialer_via(route: Arc<std::sync::RwLock<TestRelay>>) -> Arc<dyn Dial> {
    Arc::new(move |_isolation: &[u8]| -> DialFuture {
        let dialled = route.read().unwrap_or_else(|p| p.into_inner()).dial();
        Box::pin(async move {
            let stream = dialled?;
            let (reader, writer) = tokio::io::split(stream);
            Ok((Box::new(reader) as Reader, Box::new(writer) as Writer))
        })
    })
}

/// The fixture authority's signed client policy naming the kit's log (a test deployment with
/// no witness, as the kit's log has none).
pub fn policy(dir: &Path, kit: &TestRelay) -> PolicySource {
    let key = fixtures::authority();
    let path = dir.join("policy.signed");
    let signed = super::bundle(kit.log_vkey().expect("a kit with a log"), "");
    std::fs::write(&path, signed).expect("the signed policy is written");
    PolicySource::from_args(&path, &[hex::encode(key.verifying_key().as_bytes())])
        .expect("the signed policy reads back")
}

/// A post on the kit: one staff device enrolled and registered (its store in `staff_dir`,
/// closed again), and a user who has written to the post.
pub struct Post {
    pub rt: tokio::runtime::Runtime,
    pub kit: TestRelay,
    pub staff_dir: PathBuf,
    pub user: UserClient,
    /// The relay the Inbox app's connections reach (the kit, unless a test swapped it).
    route: Arc<std::sync::RwLock<TestRelay>>,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

/// A staff device of the post as its administrator sets it up (refuge-inbox init, the
/// authority's enrolment into the log, refuge-inbox register): its store in `data_dir`, its
/// enrolment request written at `request_path`, its connections routed to `kit`.
async fn staff_device(
    kit: &TestRelay,
    source: &PolicySource,
    data_dir: &Path,
    request_path: &Path,
    label: &str,
) -> InboxClient {
    let mut inbox = InboxClient::create(
        InboxSettings {
            data_dir: data_dir.to_path_buf(),
            allow_test_deployment: true,
            send_delay_max: Duration::ZERO,
            ..InboxSettings::default()
        },
        &Passphrase::new(PASSPHRASE.into()),
        KdfParams::dangerously_weak_for_tests(),
        Events::default(),
    )
    .expect("a new staff store");
    inbox.route_in_process(dialer(kit));
    let request = inbox.init_device(POST, label).expect("the device's keys");
    std::fs::write(request_path, encode_request(&request)).expect("the request file");
    let entry = authority::enrolment(&fixtures::authority(), request_path, 0)
        .expect("the authority signs the enrolment");
    kit.submit(entry.bytes).await.expect("the log takes it");
    inbox.register(source.clone()).await.expect("registered");
    inbox
}

/// What a colleague's device did in one [`Post::colleague_reads`].
#[derive(Debug)]
pub struct ColleagueRead {
    /// Open cases a history export brought to it.
    pub imported: usize,
    /// The cases it holds now.
    pub cases: Vec<String>,
}

impl Post {
    /// A post whose only case is held by a colleague's device, `DESK2`: it was enrolled and
    /// registered first, the user wrote `first` to the post (sealed for it alone), and it read
    /// it. This post's own device, `DESK` (the app's), is enrolled and registered after that: a
    /// new device, which starts without the post's cases. Returns the colleague's device,
    /// driven by the test as `refuge-inbox` would drive it.
    pub fn with_cases_on_a_colleague(seed: u64, first: &str) -> (Post, InboxClient) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let dir = tmp.path().to_path_buf();
        let staff_dir = dir.join("staff");
        let (kit, user, colleague) = rt.block_on(async {
            let kit = TestRelay::with_log(VirtualClock::at_wall_clock(), seed).await;
            let source = policy(&dir, &kit);
            let mut colleague = staff_device(
                &kit,
                &source,
                &dir.join("staff-2"),
                &dir.join("desk-2.req"),
                DESK2,
            )
            .await;
            let mut user = UserClient::create(
                UserSettings {
                    data_dir: dir.join("user"),
                    allow_test_deployment: true,
                    ..UserSettings::default()
                },
                &Passphrase::new(PASSPHRASE.into()),
                KdfParams::dangerously_weak_for_tests(),
                Events::default(),
            )
            .expect("a new user store");
            user.route_in_process(dialer(&kit));
            user.init(source.clone())
                .await
                .expect("the user's device is set up");
            user.contact(POST, &SecretText::new(first.into()), None)
                .await
                .expect("the first contact");
            colleague
                .read(&mut |_| Ok(()))
                .await
                .expect("the colleague reads the first contact");
            drop(staff_device(&kit, &source, &staff_dir, &dir.join("desk.req"), DESK).await);
            (kit, user, colleague)
        });
        let post = Post {
            rt,
            route: Arc::new(std::sync::RwLock::new(kit.clone())),
            kit,
            staff_dir,
            user,
            dir,
            _tmp: tmp,
        };
        (post, colleague)
    }

    /// Enrols and registers a colleague's device of the post, `DESK2` (its store in a folder of
    /// its own, never opened by the app), driven by the test as `refuge-inbox` would drive it.
    pub fn register_colleague(&self) -> InboxClient {
        let source = policy(&self.dir, &self.kit);
        self.rt.block_on(staff_device(
            &self.kit,
            &source,
            &self.dir.join("staff-2"),
            &self.dir.join("desk-2.req"),
            DESK2,
        ))
    }

    /// A colleague's device does what `refuge-inbox read` does: reads its staff mailbox, runs
    /// the post's sync round (its sync mailbox, colleagues' changes and history exports, its
    /// hellos and copies sealed), then sends what waits for colleagues.
    pub fn colleague_reads(&self, colleague: &mut InboxClient) -> ColleagueRead {
        self.rt.block_on(async {
            colleague
                .read(&mut |_| Ok(()))
                .await
                .expect("the colleague reads");
            let sync = colleague.sync().await.expect("the colleague's sync round");
            colleague
                .send_sync(true)
                .await
                .expect("the colleague's copies and hellos are sent");
            ColleagueRead {
                imported: sync.imported,
                cases: colleague
                    .case_summaries()
                    .expect("the colleague's cases")
                    .into_iter()
                    .map(|c| c.case_id)
                    .collect(),
            }
        })
    }

    /// A colleague's device gives the post's open cases to `to` after its person typed
    /// `number`, and sends them (`refuge-inbox export-history`).
    pub fn colleague_exports(
        &self,
        colleague: &mut InboxClient,
        to: &str,
        number: &str,
    ) -> (usize, usize) {
        self.rt.block_on(async {
            let given = colleague
                .export_history(to, number)
                .await
                .expect("the colleague's export");
            colleague.send_sync(true).await.expect("the export is sent");
            given
        })
    }

    /// Sets the post up; the user writes `first` (unless `None`).
    pub fn new(seed: u64, first: Option<&str>) -> Post {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let dir = tmp.path().to_path_buf();
        let staff_dir = dir.join("staff");
        let (kit, user) = rt.block_on(async {
            let kit = TestRelay::with_log(VirtualClock::at_wall_clock(), seed).await;
            let source = policy(&dir, &kit);
            // The staff device, as its administrator sets it up with refuge-inbox init, the
            // authority's enrolment into the log, and refuge-inbox register.
            let mut inbox = InboxClient::create(
                InboxSettings {
                    data_dir: staff_dir.clone(),
                    allow_test_deployment: true,
                    send_delay_max: Duration::ZERO,
                    ..InboxSettings::default()
                },
                &Passphrase::new(PASSPHRASE.into()),
                KdfParams::dangerously_weak_for_tests(),
                Events::default(),
            )
            .expect("a new staff store");
            inbox.route_in_process(dialer(&kit));
            let request = inbox.init_device(POST, DESK).expect("the device's keys");
            let request_path = dir.join("desk.req");
            std::fs::write(&request_path, encode_request(&request)).expect("the request file");
            let entry = authority::enrolment(&fixtures::authority(), &request_path, 0)
                .expect("the authority signs the enrolment");
            kit.submit(entry.bytes).await.expect("the log takes it");
            inbox.register(source.clone()).await.expect("registered");
            drop(inbox);
            let mut user = UserClient::create(
                UserSettings {
                    data_dir: dir.join("user"),
                    allow_test_deployment: true,
                    ..UserSettings::default()
                },
                &Passphrase::new(PASSPHRASE.into()),
                KdfParams::dangerously_weak_for_tests(),
                Events::default(),
            )
            .expect("a new user store");
            user.route_in_process(dialer(&kit));
            user.init(source)
                .await
                .expect("the user's device is set up");
            if let Some(text) = first {
                user.contact(POST, &SecretText::new(text.into()), None)
                    .await
                    .expect("the first contact");
            }
            (kit, user)
        });
        Post {
            rt,
            route: Arc::new(std::sync::RwLock::new(kit.clone())),
            kit,
            staff_dir,
            user,
            dir,
            _tmp: tmp,
        }
    }

    /// Enrols a second staff device of the post, `DESK2`, through the log as the authority does
    /// (its store in a folder of its own, never opened by the app): a colleague the first desk
    /// can hand cases to. Returns its enrolment request, which the authority keeps to revoke it.
    pub fn enrol_colleague(&self) -> PathBuf {
        let dir = self.dir.join("staff-2");
        let request_path = self.dir.join("desk-2.req");
        self.rt.block_on(async {
            let inbox = InboxClient::create(
                InboxSettings {
                    data_dir: dir,
                    allow_test_deployment: true,
                    send_delay_max: Duration::ZERO,
                    ..InboxSettings::default()
                },
                &Passphrase::new(PASSPHRASE.into()),
                KdfParams::dangerously_weak_for_tests(),
                Events::default(),
            )
            .expect("a second staff store");
            let request = inbox.init_device(POST, DESK2).expect("the device's keys");
            std::fs::write(&request_path, encode_request(&request)).expect("the request file");
            let entry = authority::enrolment(&fixtures::authority(), &request_path, 0)
                .expect("the authority signs the enrolment");
            self.kit
                .submit(entry.bytes)
                .await
                .expect("the log takes it");
        });
        request_path
    }

    /// The authority revokes the device whose enrolment request is at `request` (as
    /// `refuge-admin revoke` does): a signed revocation entry in the kit's log.
    pub fn revoke(&self, request: &Path) {
        let entry = authority::revocation(&fixtures::authority(), request)
            .expect("the authority signs the revocation");
        self.rt
            .block_on(self.kit.submit(entry.bytes))
            .expect("the log takes the revocation");
    }

    /// From now on the Inbox app reaches another relay, with a directory log of its own (signed
    /// by a key the policy does not name): a relay that serves the staff a forged directory.
    pub fn impostor_relay(&self, seed: u64) {
        let impostor = self
            .rt
            .block_on(TestRelay::with_log(VirtualClock::at_wall_clock(), seed));
        *self.route.write().unwrap_or_else(|p| p.into_inner()) = impostor;
    }

    /// From now on the Inbox app reaches the post's relay again.
    pub fn real_relay(&self) {
        *self.route.write().unwrap_or_else(|p| p.into_inner()) = self.kit.clone();
    }

    /// Another user, with a device of their own, writes `text` to the post: a case of its own.
    pub fn another_user_writes(&self, name: &str, text: &str) -> UserClient {
        let source = policy(&self.dir, &self.kit);
        self.rt.block_on(async {
            let mut user = UserClient::create(
                UserSettings {
                    data_dir: self.dir.join(name),
                    allow_test_deployment: true,
                    ..UserSettings::default()
                },
                &Passphrase::new(PASSPHRASE.into()),
                KdfParams::dangerously_weak_for_tests(),
                Events::default(),
            )
            .expect("a new user store");
            user.route_in_process(dialer(&self.kit));
            user.init(source)
                .await
                .expect("the user's device is set up");
            user.contact(POST, &SecretText::new(text.into()), None)
                .await
                .expect("the first contact");
            user
        })
    }

    /// The user writes again (a follow-up, with the reply tickets a reply brought).
    pub fn user_writes(&mut self, text: &str) {
        let user = &mut self.user;
        self.rt
            .block_on(user.contact(POST, &SecretText::new(text.into()), None))
            .expect("the user's message");
    }

    /// What the user's device holds of the conversation after reading its mailbox.
    pub fn user_reads(&mut self) -> Vec<String> {
        let user = &mut self.user;
        self.rt
            .block_on(user.receive(&mut |_| Ok(())))
            .expect("the user reads");
        user.conversation(POST, None, 50)
            .expect("the conversation")
            .iter()
            .map(|m| m.text.expose().to_string())
            .collect()
    }

    /// The user keeps `bytes` as a file named `name` (its hidden information removed as their
    /// app removes it, or kept as it is when it cannot be) and sends it with `text` to the post,
    /// through the client API. Returns the bytes that went (cleaned).
    pub fn user_sends_file(&mut self, text: &str, name: &str, bytes: &[u8]) -> Vec<u8> {
        let cleaned = refuge_client::transfer::clean_file(bytes, true).expect("a file to send");
        let report = cleaned.report_keys();
        let user = &mut self.user;
        let id = user
            .prepare_attachment(&refuge_client::store::NewAttachment {
                file_name: name,
                content_type: "application/octet-stream",
                bytes: &cleaned.bytes,
                report: &report,
            })
            .expect("the file is kept");
        self.rt
            .block_on(user.contact_with(POST, &SecretText::new(text.into()), None, &[id]))
            .expect("the message with its file");
        cleaned.bytes.to_vec()
    }

    /// The files the user's device received from the post (after reading its mailbox and
    /// downloading them), each as its name and its bytes, saved through the client API.
    pub fn user_receives_files(&mut self) -> Vec<(String, Vec<u8>)> {
        let user = &mut self.user;
        self.rt
            .block_on(user.receive(&mut |_| Ok(())))
            .expect("the user reads");
        let refuge_client::transfer::Downloads {
            refused, no_room, ..
        } = self
            .rt
            .block_on(user.download_attachments())
            .expect("the user downloads the files");
        assert!(refused.is_empty(), "files refused: {refused:?}");
        assert!(no_room.is_none(), "{no_room:?}");
        let out = self.dir.join("user-files");
        std::fs::create_dir_all(&out).expect("a folder for the user's files");
        let mut files = Vec::new();
        for m in user.conversation(POST, None, 50).expect("the conversation") {
            for a in user.attachments_of(m.id).expect("the message's files") {
                if a.outgoing {
                    continue;
                }
                let path = out.join(format!("{}-{}", a.id, a.file_name));
                user.export_attachment(a.id, &path)
                    .expect("the file arrived whole");
                files.push((
                    a.file_name.clone(),
                    std::fs::read(&path).expect("the saved file"),
                ));
            }
        }
        files
    }

    /// A folder of the test's own (for files to choose and copies to save).
    pub fn folder(&self, name: &str) -> PathBuf {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).expect("a folder");
        dir
    }

    /// The Inbox app over the staff device's store, its connections routed to the kit.
    pub fn app(&self) -> (InboxApp, mpsc::Receiver<Update>) {
        self.app_reading_every(Duration::from_secs(600))
    }

    /// [`Post::app`], reading on its own about every `every` (at least 10 s, jittered from half
    /// to one and a half of it).
    pub fn app_reading_every(&self, every: Duration) -> (InboxApp, mpsc::Receiver<Update>) {
        self.app_sending_within(every, Duration::ZERO)
    }

    /// [`Post::app_reading_every`], replies waiting a random time of up to `send_delay_max`
    /// before they are sent.
    pub fn app_sending_within(
        &self,
        every: Duration,
        send_delay_max: Duration,
    ) -> (InboxApp, mpsc::Receiver<Update>) {
        let dialer = dialer_via(self.route.clone());
        app_delayed(
            &self.staff_dir,
            Some(Arc::new(move |c: &mut InboxClient| {
                c.route_in_process(dialer.clone())
            })),
            PollSchedule::new(every, every),
            send_delay_max,
        )
    }
}

/// The Inbox app over `data_dir`, in English, whose worker reports into the returned channel.
/// It reads after signing in and when asked; the schedule's own waits (at least 300 s) are
/// longer than these tests wait for anything.
pub fn app_over(
    data_dir: &Path,
    prepare: Option<worker::Prepare>,
) -> (InboxApp, mpsc::Receiver<Update>) {
    let every = Duration::from_secs(600);
    app_with(data_dir, prepare, PollSchedule::new(every, every))
}

/// [`app_over`], reading on `poll`.
pub fn app_with(
    data_dir: &Path,
    prepare: Option<worker::Prepare>,
    poll: PollSchedule,
) -> (InboxApp, mpsc::Receiver<Update>) {
    app_delayed(data_dir, prepare, poll, Duration::ZERO)
}

/// [`app_with`], replies waiting a random time of up to `send_delay_max`.
pub fn app_delayed(
    data_dir: &Path,
    prepare: Option<worker::Prepare>,
    poll: PollSchedule,
    send_delay_max: Duration,
) -> (InboxApp, mpsc::Receiver<Update>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let report: worker::Report = Arc::new(move |u| {
        let _ = tx.lock().expect("unpoisoned").send(u);
    });
    let options = Options {
        data_dir: data_dir.to_path_buf(),
        language: Some("en".into()),
        worker: worker::Setup {
            data_dir: data_dir.to_path_buf(),
            allow_test_deployment: true,
            relay: None,
            pin: None,
            allow_direct: false,
            tor_config: None,
            send_delay_max,
            poll,
            prepare,
        },
    };
    let app = InboxApp::new(options, report).expect("the app starts");
    (app, rx)
}

/// Applies the worker's updates until `done` holds for one of them, or fails after `secs`.
pub fn pump(
    app: &InboxApp,
    rx: &mpsc::Receiver<Update>,
    secs: u64,
    what: &str,
    done: impl Fn(&Update) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(u) => {
                let hit = done(&u);
                seen.push(format!("{u:?}").chars().take(160).collect::<String>());
                app.apply(u);
                if hit {
                    return;
                }
            }
            Err(_) => panic!(
                "no update {what} within {secs} s; saw:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// Every accessible label on the screen (non-empty), in tree order.
pub fn labels(w: &InboxWindow) -> Vec<String> {
    let mut out = Vec::new();
    w.root_element().visit_descendants(|e| {
        if let Some(l) = e.accessible_label()
            && !l.is_empty()
        {
            out.push(l.to_string());
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    assert!(
        !out.is_empty(),
        "the accessibility tree is empty: built without SLINT_EMIT_DEBUG_INFO=1?"
    );
    out
}

/// Every label and description on the screen, for searches by content.
fn texts(w: &InboxWindow) -> Vec<String> {
    let mut out = labels(w);
    w.root_element().visit_descendants(|e| {
        if let Some(d) = e.accessible_description()
            && !d.is_empty()
        {
            out.push(d.to_string());
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    out
}

/// Whether some label or description on the screen contains `text`.
pub fn shows(w: &InboxWindow, text: &str) -> bool {
    texts(w).iter().any(|l| l.contains(text))
}

/// The visible element labelled `label` with role `role`; fails if there is none.
pub fn find_role(w: &InboxWindow, label: &str, role: AccessibleRole) -> ElementHandle {
    let all: Vec<ElementHandle> = ElementHandle::find_by_accessible_label(w, label).collect();
    let roles: Vec<_> = all.iter().map(|e| e.accessible_role()).collect();
    all.into_iter()
        .find(|e| e.accessible_role() == Some(role))
        .unwrap_or_else(|| {
            panic!(
                "no {role:?} labelled {label:?} (roles {roles:?}); labels shown: {:?}",
                labels(w)
            )
        })
}

/// Something visible a person can act on, labelled `label`.
pub fn find(w: &InboxWindow, label: &str) -> ElementHandle {
    let all: Vec<ElementHandle> = ElementHandle::find_by_accessible_label(w, label).collect();
    let roles: Vec<_> = all.iter().map(|e| e.accessible_role()).collect();
    all.into_iter()
        .find(|e| {
            super::INTERACTIVE.contains(&e.accessible_role().unwrap_or(AccessibleRole::None))
                || e.accessible_role() == Some(AccessibleRole::ListItem)
        })
        .unwrap_or_else(|| {
            panic!(
                "nothing to act on labelled {label:?} (roles {roles:?}); labels shown: {:?}",
                labels(w)
            )
        })
}

pub fn click(w: &InboxWindow, label: &str) {
    find(w, label).invoke_accessible_default_action();
}

pub fn type_into(w: &InboxWindow, label: &str, text: &str) {
    let e = find_role(w, label, AccessibleRole::TextInput);
    e.set_accessible_value(text);
    assert_eq!(e.accessible_value().as_deref(), Some(text));
}

/// Presses and releases `key`.
pub fn press(w: &InboxWindow, key: slint::platform::Key) {
    use slint::ComponentHandle;
    use slint::platform::WindowEvent;
    let text: slint::SharedString = key.into();
    w.window()
        .dispatch_event(WindowEvent::KeyPressed { text: text.clone() });
    w.window().dispatch_event(WindowEvent::KeyReleased { text });
}

/// Whether the list item labelled `label` is the selected one (as a screen reader hears it).
pub fn row_selected(w: &InboxWindow, label: &str) -> Option<bool> {
    find_role(w, label, AccessibleRole::ListItem).accessible_item_selected()
}
