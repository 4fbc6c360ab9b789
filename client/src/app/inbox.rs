//! [`InboxClient`]: what a staff device's programs (`refuge-inbox`, the Inbox app) stand on.

use super::PollSchedule;
use super::core::{Core, Reach, after_round, open_existing};
use crate::clock::SharedClock;
use crate::config::{PolicySource, TorSettings};
use crate::delivery::{ReceiveReport, ReceivedMessage};
use crate::error::{ClientError, Result};
use crate::events::{Event, Events};
use crate::outbox::{EarlierReport, SendReport};
use crate::secret::SecretText;
use crate::staff::{CopyFate, Staff, SyncReport, send_copy};
use crate::store::{
    CaseFilter, CaseListing, CaseMessage, CaseRecord, CaseSummary, KdfParams, Passphrase, Store,
};
use crate::sync::{CaseState, LocalChange, Roster, Status};
use crate::transport::RelayEndpoint;
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::directory_pb::EnrollmentRequest;
use refuge_proto::wire::PrekeyCount;
use std::path::PathBuf;
use std::time::Duration;

/// How long replies wait at most, by default, before they are sent (a random time up to this,
/// on a connection of their own, so that the relay cannot tie a reply to the read that
/// prompted it).
pub const DEFAULT_SEND_DELAY_MAX: Duration = Duration::from_secs(30);

/// How a staff client is set up. The default waits up to [`DEFAULT_SEND_DELAY_MAX`] before
/// replies; a front end has to ask for less.
#[derive(Clone, Debug)]
pub struct InboxSettings {
    pub data_dir: PathBuf,
    /// A relay address to use instead of the remembered one (or the one the policy names).
    pub relay: Option<String>,
    /// The relay's certificate pin, for a `quic://` relay.
    pub pin: Option<String>,
    /// Whether a direct (QUIC, loopback TCP) relay may be used (a post's network may reach the
    /// relay directly: staff are not hiding that they work for the post).
    pub allow_direct: bool,
    /// Whether a client policy marked as a test deployment may be used.
    pub allow_test_deployment: bool,
    /// How to reach Tor; `None`: as remembered from the last `register` that worked.
    pub tor: Option<TorSettings>,
    /// Replies wait a random time of up to this long before they are sent.
    pub send_delay_max: Duration,
}

impl Default for InboxSettings {
    fn default() -> Self {
        InboxSettings {
            data_dir: PathBuf::new(),
            relay: None,
            pin: None,
            allow_direct: false,
            allow_test_deployment: false,
            tor: None,
            send_delay_max: DEFAULT_SEND_DELAY_MAX,
        }
    }
}

/// What one [`InboxClient::read`] did.
#[derive(Debug, Default)]
pub struct InboxReadSummary {
    pub report: ReceiveReport,
    /// Why users cannot reach this device, if the directory does not list it as it is.
    pub not_enrolled: Option<ClientError>,
    /// The cases that new messages arrived in, in order (a case once per message).
    pub arrived_in: Vec<String>,
    /// Replies wait in the outbox (from earlier runs): [`InboxClient::send_waiting`] sends
    /// them, after its random wait.
    pub replies_waiting: bool,
}

/// What one [`InboxClient::reply`] did.
#[derive(Debug)]
pub struct ReplySummary {
    /// The full id of the case replied to.
    pub case_id: String,
    /// The reply's id in the case.
    pub message: i64,
    /// What became of replies earlier runs had left in the outbox.
    pub earlier: EarlierReport,
}

/// A reply sealed into the outbox by [`InboxClient::queue_reply`], not sent yet.
#[derive(Debug)]
pub struct QueuedReply {
    /// The full id of the case replied to.
    pub case_id: String,
    /// The reply's id in the case.
    pub message: i64,
    /// How long to wait before [`InboxClient::send_queued`]: a random time up to the client's
    /// longest, so that the relay cannot tie the reply to the read that prompted it.
    pub send_after: Duration,
}

/// A reply sealed into the outbox, with what sending it needs.
struct SealedReply {
    case_id: String,
    row: i64,
    message: i64,
    endpoint: RelayEndpoint,
    directory: VerifiedDirectory,
}

/// A staff device's client: its encrypted store, one Tor client, the verified directory.
#[derive(Debug)]
pub struct InboxClient {
    core: Core,
    send_delay_max: Duration,
    /// Colleagues forgotten by a read (the directory no longer lists them), reported by the
    /// next sync round.
    forgotten: Vec<String>,
}

impl InboxClient {
    /// Opens the existing store in `settings.data_dir` with `passphrase`.
    pub fn unlock(
        settings: InboxSettings,
        passphrase: &Passphrase,
        events: Events,
    ) -> Result<Self> {
        let store = open_existing(
            &settings.data_dir,
            passphrase,
            "refuge-inbox",
            "refuge-inbox init",
        )?;
        InboxClient::with_store(store, settings, events)
    }

    /// Creates a new store under `passphrase` (the device's keys come with
    /// [`InboxClient::init_device`]).
    pub fn create(
        settings: InboxSettings,
        passphrase: &Passphrase,
        params: KdfParams,
        events: Events,
    ) -> Result<Self> {
        let store = Store::create(&settings.data_dir, passphrase, params)?;
        InboxClient::with_store(store, settings, events)
    }

    /// A client over an open store.
    pub fn with_store(store: Store, settings: InboxSettings, events: Events) -> Result<Self> {
        let reach = Reach {
            relay: settings.relay,
            pin: settings.pin,
            allow_direct: settings.allow_direct,
            allow_test_deployment: settings.allow_test_deployment,
            tor: settings.tor,
        };
        let core = Core::new(
            store,
            &settings.data_dir,
            reach,
            events,
            "client policy (refuge-inbox register --policy)",
        )?;
        Ok(InboxClient {
            core,
            send_delay_max: settings.send_delay_max,
            forgotten: Vec::new(),
        })
    }

    /// Makes `clock` the client's one clock.
    pub fn set_clock(&mut self, clock: SharedClock) -> Result<()> {
        self.core.store.set_clock(clock)
    }

    /// Sends every connection to an in-process relay (the test kit's) instead of Tor or a
    /// socket; see [`crate::net::Network::route_in_process`]. Only with the `in-process`
    /// feature (tests).
    #[cfg(any(test, feature = "in-process"))]
    pub fn route_in_process(&mut self, dialer: std::sync::Arc<dyn crate::transport::Dial>) {
        self.core.network.route_in_process(dialer);
    }

    pub fn store(&self) -> &Store {
        &self.core.store
    }

    pub fn events(&self) -> &Events {
        self.core.events()
    }

    fn staff(&self) -> Result<Staff<'_>> {
        Staff::load(&self.core.store)
    }

    /// This device's label (`POST/DESK`).
    pub fn label(&self) -> Result<String> {
        Ok(self.staff()?.label().to_string())
    }

    /// Creates this device's keys; returns the enrolment request for the authority.
    pub fn init_device(&self, post_id: &str, label: &str) -> Result<EnrollmentRequest> {
        Ok(Staff::init(&self.core.store, post_id, label)?.1)
    }

    /// Checks the enrolment in the directory log verified under `source` and uploads prekeys,
    /// on this device's own circuit; remembers the policy, relay and Tor settings once that
    /// worked.
    pub async fn register(&mut self, mut source: PolicySource) -> Result<PrekeyCount> {
        let label = self.label()?;
        self.core.allow_deployment(&mut source);
        let endpoint = self.core.endpoint_for(Some(&source.policy))?;
        let mut session = self.core.connect(&endpoint, label.as_bytes()).await?;
        let registered = async {
            let directory = self.core.sync_on(&mut session, &source).await?.clone();
            let staff = self.staff()?;
            staff.check_enrolled(&directory)?;
            staff.register(&mut session, self.core.store.now()).await
        }
        .await;
        session.close().await;
        let count = registered?;
        let store = &self.core.store;
        store.save_policy(&source)?;
        store.save_relay(&endpoint)?;
        store.save_tor_settings(self.core.network.settings())?;
        Ok(count)
    }

    /// Reads new messages into cases on this device's own circuit (the directory verified on
    /// the same session first), `show` seeing each once. Replies left in the outbox are not
    /// sent here ([`InboxClient::send_waiting`] does, after its random wait), so that the
    /// caller can show what was read first.
    pub async fn read(
        &mut self,
        show: &mut dyn FnMut(&ReceivedMessage) -> Result<()>,
    ) -> Result<InboxReadSummary> {
        let label = self.label()?;
        let source = self.core.policy()?;
        let endpoint = self.core.endpoint_for(Some(&source.policy))?;
        let mut summary = InboxReadSummary::default();
        let mut session = self.core.connect(&endpoint, label.as_bytes()).await?;
        let events = self.events().clone();
        let read = async {
            let directory = self.core.sync_on(&mut session, &source).await?.clone();
            let staff = self.staff()?;
            summary.not_enrolled = staff.check_enrolled(&directory).err();
            let arrived = &mut summary.arrived_in;
            // Each arrival is reported as it is kept: a read that fails later (or is given up)
            // has still told the front end about what it kept, which the next read will not
            // show again.
            let mut shown = |m: &ReceivedMessage| {
                show(m)?;
                if let Some(case) = m.sender.case_id() {
                    events.emit(Event::CaseArrived { case: case.clone() });
                    arrived.push(case);
                }
                Ok(())
            };
            let now = self.core.store.now();
            // The post's devices as this directory lists them, before any hello is read: a
            // colleague re-enrolled with another key is known by its new key (ADR 0012).
            let forgotten = staff.sync_roster(&directory)?;
            let report = staff
                .read(&mut session, &directory, now, &mut shown)
                .await?;
            Ok::<_, ClientError>((report, forgotten))
        }
        .await;
        session.close().await;
        let (report, forgotten) = read?;
        summary.report = report;
        self.forgotten.extend(forgotten);
        if let Some(e) = &summary.not_enrolled {
            self.events().emit(Event::NotEnrolled {
                reason: e.to_string(),
            });
        }
        for what in &summary.report.misbehaviour {
            self.events()
                .emit(Event::RelayMisbehaved { what: what.clone() });
        }
        summary.replies_waiting = !self.core.store.outbox()?.is_empty();
        Ok(summary)
    }

    /// The post's sync round (ADR 0012), [`InboxClient::sync_delay`] after a read rather than
    /// next to it: the directory (verified in the last [`super::DIRECTORY_REFRESH`], else now);
    /// colleagues it no longer lists forgotten (and this device's sync address replaced, so
    /// that a revoked device cannot watch or fill it); the sync mailbox created if need be and
    /// read, on a connection of its own; colleagues' operations that waited tried again;
    /// hellos queued for colleagues that have not had one (their bundles fetched on another
    /// connection of its own); this device's new operations sealed for its colleagues. Nothing
    /// is sent here: each copy and hello waits for its own random time
    /// ([`InboxClient::next_copy_in`], [`InboxClient::send_sync`]). The cases colleagues
    /// changed are reported as [`Event::CaseArrived`].
    pub async fn sync(&mut self) -> Result<SyncReport> {
        let source = self.core.policy()?;
        let endpoint = self.core.endpoint_for(Some(&source.policy))?;
        let directory = self.core.directory_within(super::DIRECTORY_REFRESH).await?;
        let mut report = self.sync_round(&endpoint, &directory).await?;
        let mut forgotten = std::mem::take(&mut self.forgotten);
        forgotten.append(&mut report.forgotten);
        report.forgotten = forgotten;
        for case in &report.cases {
            self.events()
                .emit(Event::CaseArrived { case: case.clone() });
        }
        Ok(report)
    }

    /// A random wait before [`InboxClient::sync`] (drawn like a reply's), so that the relay
    /// cannot tie the sync mailbox's read to this device's read of its staff mailbox.
    pub fn sync_delay(&self) -> Duration {
        self.pick_delay()
    }

    /// How long until the next copy or hello for a colleague is due (`None`: none waits).
    pub fn next_copy_in(&self) -> Result<Option<Duration>> {
        let now_ms = crate::sync::hlc::unix_ms(self.core.store.now());
        Ok(self
            .core
            .store
            .sync_outbox()?
            .first()
            .map(|p| Duration::from_millis(p.send_after_ms.saturating_sub(now_ms))))
    }

    /// The post's sync round (ADR 0012), after a read: colleagues the directory no longer
    /// lists forgotten; this device's sync mailbox created if need be and read, on a connection
    /// of its own; colleagues' operations that waited tried again; hellos queued for
    /// colleagues that have not had one (their bundles fetched on another connection of its
    /// own); this device's new operations sealed for its colleagues. Nothing is sent here:
    /// copies and hellos wait their own random time ([`InboxClient::send_queued`],
    /// [`InboxClient::send_sync`]).
    async fn sync_round(
        &mut self,
        endpoint: &RelayEndpoint,
        directory: &VerifiedDirectory,
    ) -> Result<SyncReport> {
        let staff = self.staff()?;
        let forgotten = staff.sync_roster(directory)?;
        // Copies whose time passed while nothing could send them get a fresh random time:
        // never sent next to this round's connections.
        self.reschedule_overdue()?;
        let mut session = self
            .core
            .connect(endpoint, &rand::random::<[u8; 16]>())
            .await?;
        let now = self.core.store.now();
        let read = staff.read_sync(&mut session, directory, now).await;
        session.close().await;
        let mut report = read?;
        report.forgotten = forgotten;
        let max = self.send_delay_max;
        let delay = move || pick_delay(max);
        if staff.hellos_due()? {
            let mut session = self
                .core
                .connect(endpoint, &rand::random::<[u8; 16]>())
                .await?;
            let queued = staff
                .queue_hellos(&mut session, directory, now, &delay)
                .await;
            session.close().await;
            report.hellos = queued?;
        }
        report.copies = staff.seal_copies(directory, now, &delay).await?;
        Ok(report)
    }

    /// This device's safety number (its identity key bound to its label), as a colleague
    /// compares it before giving it the post's cases ([`InboxClient::export_history`]).
    pub fn safety_number(&self) -> Result<String> {
        let staff = self.staff()?;
        let key = self
            .core
            .store
            .local_identity()?
            .ok_or_else(|| ClientError::Corrupt("no identity key".into()))?
            .identity_key()?
            .serialize();
        Ok(refuge_proto::safety_number::device_safety_number(&key, staff.label()).to_string())
    }

    /// Gives the post's open cases (each with its conversation) to `to`, a device of the post
    /// enrolled later (ADR 0012 point 7), once the person has compared its safety number:
    /// `number` must be the one `to`'s own screen shows (digits compared, spaces ignored) and
    /// the directory verified now lists under that label. Sealed for it on the sync channel,
    /// sent by [`InboxClient::send_sync`]. Returns (cases, copies).
    pub async fn export_history(&mut self, to: &str, number: &str) -> Result<(usize, usize)> {
        let source = self.core.policy()?;
        let endpoint = self.core.endpoint_for(Some(&source.policy))?;
        let directory = self.core.sync_with(&source, &endpoint).await?.clone();
        let Some((_, device)) = directory.device_by_label(to) else {
            return Err(ClientError::InvalidArgument(format!(
                "{to} is not a device in the verified directory"
            )));
        };
        let expected =
            refuge_proto::safety_number::device_safety_number(&device.identity_key, to).to_string();
        let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
        if digits(number) != digits(&expected) {
            return Err(ClientError::SafetyNumberMismatch {
                device: to.to_string(),
            });
        }
        let staff = self.staff()?;
        staff.sync_roster(&directory)?;
        let max = self.send_delay_max;
        let delay = move || pick_delay(max);
        let now = self.core.store.now();
        staff.export_history(to, &directory, now, &delay).await
    }

    /// Accepts, for a day, the post's open cases from `from`, a colleague's device (ADR 0012
    /// point 7: the person on this device agrees, as the one on the exporting device does
    /// after comparing this device's safety number). Without it, a history export is refused.
    pub fn accept_history_from(&self, from: &str) -> Result<()> {
        if let Some(roster) = self.roster()?
            && !roster.is_colleague(from)
        {
            return Err(ClientError::InvalidArgument(format!(
                "{from} is not a colleague in this post's verified directory"
            )));
        }
        crate::staff::accept_history_from(&self.core.store, from)
    }

    /// Sends the copies and hellos for colleagues whose time has come, each on a connection of
    /// its own; with `wait`, also those still waiting, each at its time (a command that ends
    /// after it; the wait is at most the client's longest send delay). Returns how many the
    /// relay took.
    ///
    /// The outbox is read once (with its expiry sweep), and the directory and the colleagues
    /// checked once, for all the copies due; after a wait for the next one's time, the
    /// directory is checked again (verified again if it has aged past
    /// [`super::DIRECTORY_REFRESH`]) and, if it changed, the colleagues with it.
    pub async fn send_sync(&mut self, wait: bool) -> Result<usize> {
        if wait {
            self.reschedule_overdue()?;
        }
        let waiting = self.core.store.sync_outbox()?;
        let now_ms = crate::sync::hlc::unix_ms(self.core.store.now());
        match waiting.first() {
            None => return Ok(0),
            Some(next) if next.send_after_ms > now_ms && !wait => return Ok(0),
            Some(_) => {}
        }
        // Not to a colleague the directory no longer lists (its copies are gone from the
        // outbox with it).
        let (mut endpoint, mut directory) = self.sync_directory().await?;
        let mut gone = self.staff()?.sync_roster(&directory)?;
        self.forgotten.extend(gone.iter().cloned());
        let mut sent = 0;
        for p in waiting {
            let now_ms = crate::sync::hlc::unix_ms(self.core.store.now());
            if p.send_after_ms > now_ms {
                if !wait {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(p.send_after_ms - now_ms)).await;
                let (e, d) = self.sync_directory().await?;
                endpoint = e;
                if d.version() != directory.version() {
                    let forgotten = self.staff()?.sync_roster(&d)?;
                    self.forgotten.extend(forgotten.iter().cloned());
                    gone.extend(forgotten);
                    directory = d;
                }
            }
            if gone.contains(&p.label) {
                continue;
            }
            let mut session = self
                .core
                .connect(&endpoint, &rand::random::<[u8; 16]>())
                .await?;
            let fate = send_copy(&self.core.store, &mut session, &p).await;
            session.close().await;
            match fate? {
                CopyFate::Sent => sent += 1,
                CopyFate::Dropped(None) => {}
                CopyFate::Dropped(Some(e)) => {
                    self.events().emit(Event::ReceiveFailed {
                        error: format!("a copy for {} was refused by the relay: {e}", p.label),
                        retry_in_secs: 0,
                    });
                }
                // Its mailbox is full: it waits for the next round.
                CopyFate::Held => return Ok(sent),
            }
        }
        Ok(sent)
    }

    /// The relay's endpoint and the directory (verified in the last
    /// [`super::DIRECTORY_REFRESH`], else now), for sending copies.
    async fn sync_directory(&mut self) -> Result<(RelayEndpoint, VerifiedDirectory)> {
        let source = self.core.policy()?;
        let endpoint = self.core.endpoint_for(Some(&source.policy))?;
        let directory = self.core.directory_within(super::DIRECTORY_REFRESH).await?;
        Ok((endpoint, directory))
    }

    /// Gives each copy whose time has passed a fresh random time from now.
    fn reschedule_overdue(&self) -> Result<()> {
        let now_ms = crate::sync::hlc::unix_ms(self.core.store.now());
        let max = self.send_delay_max;
        self.core
            .store
            .reschedule_sync_outbox(now_ms, &|| pick_delay(max).as_millis() as u64)
    }

    /// Reads now and then every [`PollSchedule`] wait, until `stop` completes; after each
    /// read, replies waiting in the outbox are sent (after their random wait, on a connection
    /// of their own, as [`InboxClient::send_waiting`]). What a read finds is reported as it
    /// happens ([`Event::CaseArrived`], [`Event::NotEnrolled`], [`Event::RelayMisbehaved`]). A
    /// failed read or send is reported as [`Event::ReceiveFailed`] and tried again after a
    /// longer wait; one that may be an attack ends the loop with its error.
    ///
    /// `stop` is honoured between reads, and during the random wait and the sending of
    /// replies, which is as safe as a crash there (a reply stays in the outbox until the relay
    /// confirmed it); a read under way is finished first.
    pub async fn read_until(
        &mut self,
        mut schedule: PollSchedule,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        let mut stop = std::pin::pin!(stop);
        loop {
            let outcome = match self.read(&mut |_| Ok(())).await {
                Ok(_) => tokio::select! {
                    () = &mut stop => return Ok(()),
                    sent = self.send_then_sync() => sent,
                },
                Err(e) => Err(e),
            };
            let events = self.events().clone();
            if !after_round(&events, &mut schedule, outcome, stop.as_mut()).await? {
                return Ok(());
            }
        }
    }

    /// After a read: replies that wait (after their random wait), then the post's sync round
    /// after a wait of its own, then its copies each at its time.
    async fn send_then_sync(&mut self) -> Result<()> {
        self.send_waiting().await?;
        tokio::time::sleep(self.sync_delay()).await;
        self.sync().await?;
        self.send_sync(true).await?;
        Ok(())
    }

    /// Sends the replies waiting in the outbox (left by runs that could not get them
    /// confirmed), after a random wait and on a connection of their own. Nothing waiting:
    /// nothing happens.
    pub async fn send_waiting(&mut self) -> Result<EarlierReport> {
        let delay = self.pick_delay();
        self.send_outbox(delay).await
    }

    /// Sends what waits in the outbox after `delay`, on a connection of its own (the
    /// directory verified in the last [`super::DIRECTORY_REFRESH`], else now). Nothing
    /// waiting: nothing happens.
    async fn send_outbox(&mut self, delay: Duration) -> Result<EarlierReport> {
        if self.core.store.outbox()?.is_empty() {
            return Ok(EarlierReport::default());
        }
        let source = self.core.policy()?;
        let endpoint = self.core.endpoint_for(Some(&source.policy))?;
        let directory = self.core.directory_within(super::DIRECTORY_REFRESH).await?;
        let sent = self.send_later(&endpoint, &directory, &[], delay).await?;
        Ok(EarlierReport::of(&sent))
    }

    /// Replies to `case_id` (the full id, or a unique prefix of at least 8): the directory on
    /// a circuit of its own, the reply sealed into the outbox and the case, then after a random
    /// wait sent on a connection of its own. An error if the relay refused it or it waits.
    pub async fn reply(&mut self, case_id: &str, text: &SecretText) -> Result<ReplySummary> {
        self.reply_with(case_id, text, &[]).await
    }

    /// [`InboxClient::reply`] with files (ids of [`InboxClient::prepare_attachment`]): each
    /// uploaded first, on a connection of its own, to the user's mailbox; an upload cut short
    /// fails the reply before it is sealed, and replying with the same files again goes on from
    /// the last chunk the relay confirmed.
    pub async fn reply_with(
        &mut self,
        case_id: &str,
        text: &SecretText,
        attachments: &[i64],
    ) -> Result<ReplySummary> {
        let delay = self.pick_delay();
        let sealed = self.seal_reply(case_id, text, attachments).await?;
        let sent = self
            .send_later(&sealed.endpoint, &sealed.directory, &[sealed.row], delay)
            .await?;
        Ok(ReplySummary {
            case_id: sealed.case_id,
            message: sealed.message,
            earlier: EarlierReport::of(&sent),
        })
    }

    /// Verifies the directory on a connection of its own, then seals the reply into the
    /// outbox and the case (reported as queued); sends nothing. The reply itself goes on
    /// another connection after a random wait: the relay must not tie it to this device's
    /// reads.
    async fn seal_reply(
        &mut self,
        case_id: &str,
        text: &SecretText,
        attachments: &[i64],
    ) -> Result<SealedReply> {
        self.staff()?;
        let case = self.case(case_id)?;
        let source = self.core.policy()?;
        let endpoint = self.core.endpoint_for(Some(&source.policy))?;
        let directory = self.core.sync_with(&source, &endpoint).await?.clone();
        if !attachments.is_empty() {
            let mut session = self
                .core
                .connect(&endpoint, &super::fresh_circuit())
                .await?;
            let uploaded = self
                .staff()?
                .upload_for_case(&mut session, &case.case_id, attachments, self.events())
                .await;
            session.close().await;
            uploaded?;
        }
        let now = self.core.store.now();
        let row = self
            .staff()?
            .queue_reply_with(&directory, &case.case_id, text, now, attachments)
            .await?;
        let message = self
            .core
            .store
            .outbox()?
            .iter()
            .find(|p| p.id == row)
            .and_then(|p| p.message.case_message)
            .unwrap_or_default();
        self.report_reply(message)?;
        Ok(SealedReply {
            case_id: case.case_id,
            row,
            message,
            endpoint,
            directory,
        })
    }

    /// The first half of [`InboxClient::reply`], for a front end that must stay responsive
    /// during the random wait: the directory verified on a circuit of its own, the reply sealed
    /// into the outbox and the case (reported as queued). Nothing is sent: the caller waits
    /// [`QueuedReply::send_after`] (drawn like [`InboxClient::reply`]'s wait), doing other work
    /// meanwhile, then calls [`InboxClient::send_queued`].
    pub async fn queue_reply(&mut self, case_id: &str, text: &SecretText) -> Result<QueuedReply> {
        self.queue_reply_with(case_id, text, &[]).await
    }

    /// [`InboxClient::queue_reply`] with files, uploaded first on a connection of their own
    /// (as [`InboxClient::reply_with`]).
    pub async fn queue_reply_with(
        &mut self,
        case_id: &str,
        text: &SecretText,
        attachments: &[i64],
    ) -> Result<QueuedReply> {
        let sealed = self.seal_reply(case_id, text, attachments).await?;
        Ok(QueuedReply {
            case_id: sealed.case_id,
            message: sealed.message,
            send_after: self.pick_delay(),
        })
    }

    /// Sends what waits in the outbox now, on a connection of its own (the second half of
    /// [`InboxClient::queue_reply`]: the caller has waited the random time). Nothing waiting:
    /// nothing happens.
    pub async fn send_queued(&mut self) -> Result<EarlierReport> {
        self.send_outbox(Duration::ZERO).await
    }

    /// A random wait before sending what waits in the outbox (as [`InboxClient::send_waiting`]
    /// draws it), for a front end that schedules [`InboxClient::send_queued`] itself; `None`
    /// when nothing waits.
    pub fn waiting_send_delay(&self) -> Result<Option<Duration>> {
        Ok((!self.core.store.outbox()?.is_empty()).then(|| self.pick_delay()))
    }

    /// A wait drawn uniformly from zero to the longest, to the millisecond.
    fn pick_delay(&self) -> Duration {
        pick_delay(self.send_delay_max)
    }

    /// Waits `delay`, then sends what waits in the outbox on a connection of its own (a
    /// circuit of its own), settling `rows` (this run's replies); reports the replies whose
    /// state changed.
    async fn send_later(
        &self,
        endpoint: &RelayEndpoint,
        directory: &VerifiedDirectory,
        rows: &[i64],
        delay: Duration,
    ) -> Result<SendReport> {
        let replies: Vec<i64> = self
            .core
            .store
            .outbox()?
            .iter()
            .filter_map(|p| p.message.case_message)
            .collect();
        if !delay.is_zero() {
            self.events().emit(Event::SendDelayed {
                secs: delay.as_secs(),
            });
            tokio::time::sleep(delay).await;
        }
        let isolation: [u8; 16] = rand::random();
        let mut session = self.core.connect(endpoint, &isolation).await?;
        let sent = self
            .staff()?
            .send_replies(&mut session, directory, rows)
            .await;
        session.close().await;
        for id in replies {
            self.report_reply(id)?;
        }
        sent
    }

    fn report_reply(&self, id: i64) -> Result<()> {
        if let Some((case, Some(delivery))) = self.core.store.reply_state(id)? {
            self.events().emit(Event::Reply {
                message: id,
                case,
                delivery,
            });
        }
        Ok(())
    }

    /// Every case with its number of messages, in the order they were opened.
    pub fn case_summaries(&self) -> Result<Vec<CaseSummary>> {
        self.staff()?.cases()
    }

    /// Up to `limit` cases matching `filter`, newest activity first, after the listing
    /// `after` (its `(last_id, case_id)`; from the newest if `None`).
    pub fn cases(
        &self,
        filter: CaseFilter,
        after: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<CaseListing>> {
        let mut listed = self.core.store.case_list(filter, after, limit)?;
        if let Some(roster) = self.roster()? {
            for case in &mut listed {
                let to = case
                    .assigned_to
                    .as_deref()
                    .map(|label| (label, case.assigned_to_key.as_deref().unwrap_or_default()));
                case.needs_reassignment = Some(roster.needs_reassignment(case.status, to));
            }
        }
        Ok(listed)
    }

    /// How many cases each of `filters` holds, each counted up to `cap`
    /// ([`Store::case_counts`](crate::store::Store::case_counts)).
    pub fn case_counts(&self, filters: &[CaseFilter], cap: u32) -> Result<Vec<usize>> {
        self.core.store.case_counts(filters, cap)
    }

    // ------------------------------------------------ the post as a team (ADR 0012)

    /// The post's shared state of a case: status, who handles it, the star, internal notes,
    /// and the replies of every device of the post with their author.
    ///
    /// Devices are shown as this device knows them (ADR 0012, defect 1): this device and the
    /// devices the directory it verified lists with their key, by their label; any other (a
    /// device revoked, or replaced under its label since, or whose key was not recorded) by its
    /// label and key ([`Roster::show`]), so that a successor enrolled under a revoked device's
    /// label never shows that device's notes, handovers or replies as its own.
    pub fn case_state(&self, case_id: &str) -> Result<CaseState> {
        let case = self.case(case_id)?;
        let mut state = self
            .core
            .store
            .case_state(&case.case_id)?
            .unwrap_or_default();
        let roster = self.known_devices()?;
        state.show_devices(|label, key| roster.show(label, key));
        Ok(state)
    }

    /// The devices of this device's post as this client knows them, to show them
    /// ([`Roster::show`]): the directory it verified, if it verified one in this run; else the
    /// colleagues its last sync round kept from the directory verified then (label and key:
    /// a device revoked since was forgotten there), and this device.
    fn known_devices(&self) -> Result<Roster> {
        if let Some(roster) = self.roster()? {
            return Ok(roster);
        }
        let staff = self.staff()?;
        let me = staff.author();
        let devices = self
            .core
            .store
            .sync_colleagues()?
            .into_iter()
            .map(|c| (c.label, c.identity_key))
            .chain([(me.label().to_string(), me.key().to_vec())])
            .collect();
        Ok(Roster::of("", me.label(), me.key(), devices))
    }

    /// This device's post as the directory this client verified last lists it (`None` before
    /// it verified one): what "needs reassignment" is computed from
    /// ([`Roster::needs_reassignment`]).
    pub fn roster(&self) -> Result<Option<Roster>> {
        let staff = self.staff()?;
        Ok(self.core.directory.as_ref().map(|d| staff.roster(d)))
    }

    /// Hands a case to a device of the post (`to`, its label; this device's own to take it),
    /// with a note for it. The device must be in the post's verified directory: the one this
    /// client verified in the last [`super::DIRECTORY_REFRESH`], else verified now.
    pub async fn assign(&mut self, case_id: &str, to: &str, note: &SecretText) -> Result<()> {
        let case = self.case(case_id)?;
        let directory = self.core.directory_within(super::DIRECTORY_REFRESH).await?;
        let staff = self.staff()?;
        let to = staff.roster(&directory).assignee(to)?;
        staff.change_case(
            &case.case_id,
            LocalChange::Assign {
                to,
                note: note.clone(),
            },
        )?;
        Ok(())
    }

    /// Sets a case's status.
    pub fn set_status(&self, case_id: &str, status: Status) -> Result<()> {
        self.staff()?
            .change_case(case_id, LocalChange::Status(status))?;
        Ok(())
    }

    /// Stars a case for the whole post (`on`), or takes the star off.
    pub fn star(&self, case_id: &str, on: bool) -> Result<()> {
        self.staff()?.change_case(case_id, LocalChange::Star(on))?;
        Ok(())
    }

    /// Adds an internal note to a case (never sent to the user); returns its id.
    pub fn add_note(&self, case_id: &str, text: &SecretText) -> Result<u64> {
        let id = rand::random_range(1..=u64::MAX);
        self.staff()?.change_case(
            case_id,
            LocalChange::Note {
                id,
                text: text.clone(),
            },
        )?;
        Ok(id)
    }

    /// Replaces the text of one of this device's notes on a case.
    pub fn edit_note(&self, case_id: &str, note_id: u64, text: &SecretText) -> Result<()> {
        let staff = self.staff()?;
        let case = self.case(case_id)?;
        let state = self
            .core
            .store
            .case_state(&case.case_id)?
            .unwrap_or_default();
        // This device's notes by its label *and* key: a note of a device revoked and replaced
        // under this device's label is not this device's (ADR 0012, defect 1).
        let me = staff.author();
        if !state
            .notes
            .contains_key(&(crate::sync::device_name(me.label(), me.key()), note_id))
        {
            return Err(ClientError::InvalidArgument(format!(
                "this device wrote no note {note_id} on case {case_id}"
            )));
        }
        staff.change_case(
            case_id,
            LocalChange::Note {
                id: note_id,
                text: text.clone(),
            },
        )?;
        Ok(())
    }

    /// Up to `limit` messages of a case before message `before`, oldest first.
    pub fn case_messages(
        &self,
        case_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<CaseMessage>> {
        let case = self.case(case_id)?;
        let mut page = self.core.store.case_page(&case.case_id, before, limit)?;
        // Each reply's device as this device knows it (see `case_state`): a reply of a device
        // revoked or replaced under its label since is not shown as its successor's.
        if page.iter().any(|m| m.author.is_some()) {
            let roster = self.known_devices()?;
            for m in &mut page {
                if let Some(author) = &m.author {
                    m.author =
                        Some(roster.show(author, m.author_key.as_deref().unwrap_or_default()));
                }
            }
        }
        Ok(page)
    }

    /// Marks the user's messages in a case with ids in `ids` (those a view showed) as read.
    pub fn mark_read(&self, case_id: &str, ids: std::ops::RangeInclusive<i64>) -> Result<u64> {
        let case = self.case(case_id)?;
        self.core.store.mark_case_seen(&case.case_id, ids)
    }

    /// The post's devices the user's latest first contact in `case_id` (full id or unique
    /// prefix) was not sealed for, by label: the relay handed out no keys for them, so they do
    /// not have this case. Empty when it reached every device the directory listed on arrival.
    pub fn not_sealed_for(&self, case_id: &str) -> Result<Vec<String>> {
        let case = self.case(case_id)?;
        self.core.store.case_not_sealed_for(&case.case_id)
    }

    /// The case with this id or unique prefix of at least 8.
    fn case(&self, case_id: &str) -> Result<CaseRecord> {
        self.core
            .store
            .case(case_id)?
            .ok_or_else(|| ClientError::UnknownCase {
                case: case_id.to_string(),
            })
    }

    /// Re-encrypts the store under `new`.
    pub fn change_passphrase(&mut self, new: &Passphrase, params: KdfParams) -> Result<()> {
        self.core.store.change_passphrase(new, params)
    }

    /// The directory log checkpoint this device verified last (kept in the store between runs
    /// by [`crate::directory::sync`], with the witnesses' cosignatures), checked again against
    /// the stored policy's log key; `None` before the first verified download. Read-only: for
    /// a front end's transparency-log status.
    pub fn verified_checkpoint(
        &self,
    ) -> Result<Option<refuge_proto::directory_sync::TrustedCheckpoint>> {
        let Some(source) = self.core.store.policy()? else {
            return Ok(None);
        };
        let Some(note) = self.core.store.setting(crate::directory::CHECKPOINT)? else {
            return Ok(None);
        };
        refuge_proto::directory_sync::TrustedCheckpoint::from_bytes(note.as_bytes(), &source.policy)
            .map(Some)
            .map_err(|e| ClientError::Corrupt(format!("the stored checkpoint: {e}")))
    }
}

// ------------------------------------------------ reply templates and the user's key status

/// Most reply templates a device keeps.
pub const MAX_REPLY_TEMPLATES: usize = 200;
/// Longest text of a reply template, in bytes (UTF-8).
pub const MAX_REPLY_TEMPLATE_BYTES: usize = 8 * 1024;
/// Longest title of a reply template, in characters.
pub const MAX_REPLY_TEMPLATE_TITLE: usize = 120;

/// The setting that holds this device's reply templates: a [`ReplyTemplateList`], protobuf,
/// in base64.
const REPLY_TEMPLATES: &str = "inbox.reply_templates";
/// The setting, per case, that holds the user's safety number as this device verified it with
/// the user (its 30 digits; empty: not verified).
const KEY_VERIFIED: &str = "inbox.user_key_verified.";

/// A reply a member of staff saved to insert again: a title, the language it is written in (a
/// language tag such as `fr`, `ar`, `fa`, `zh_CN`) and its text. Kept on this device only (in
/// its encrypted store); never sent to colleagues or to users.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ReplyTemplate {
    /// Random, never 0.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub title: String,
    #[prost(string, tag = "3")]
    pub language: String,
    #[prost(string, tag = "4")]
    pub text: String,
}

/// The stored form of the templates, in the order they were first saved.
#[derive(Clone, PartialEq, prost::Message)]
struct ReplyTemplateList {
    #[prost(message, repeated, tag = "1")]
    templates: Vec<ReplyTemplate>,
}

/// Whether `tag` is a language tag: 2 or 3 letters, optionally a region or script after `_` or
/// `-` (`fr`, `zh_CN`, `pt-BR`).
fn is_language_tag(tag: &str) -> bool {
    let (lang, rest) = match tag.find(['_', '-']) {
        Some(i) => (&tag[..i], Some(&tag[i + 1..])),
        None => (tag, None),
    };
    let lang_ok = (2..=3).contains(&lang.len()) && lang.bytes().all(|b| b.is_ascii_alphabetic());
    let rest_ok = rest
        .is_none_or(|r| (2..=8).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric()));
    lang_ok && rest_ok
}

impl InboxClient {
    /// Most reply templates a device keeps ([`MAX_REPLY_TEMPLATES`]).
    pub const MAX_REPLY_TEMPLATES: usize = MAX_REPLY_TEMPLATES;
    /// Longest text of a reply template, in bytes ([`MAX_REPLY_TEMPLATE_BYTES`]).
    pub const MAX_REPLY_TEMPLATE_BYTES: usize = MAX_REPLY_TEMPLATE_BYTES;
    /// Longest title of a reply template, in characters ([`MAX_REPLY_TEMPLATE_TITLE`]).
    pub const MAX_REPLY_TEMPLATE_TITLE: usize = MAX_REPLY_TEMPLATE_TITLE;

    /// This device's reply templates, in the order they were first saved.
    pub fn reply_templates(&self) -> Result<Vec<ReplyTemplate>> {
        use base64::Engine as _;
        use prost::Message as _;
        let Some(stored) = self.core.store.setting(REPLY_TEMPLATES)? else {
            return Ok(Vec::new());
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(stored.as_bytes())
            .map_err(|e| ClientError::Corrupt(format!("the stored reply templates: {e}")))?;
        let list = ReplyTemplateList::decode(bytes.as_slice())
            .map_err(|e| ClientError::Corrupt(format!("the stored reply templates: {e}")))?;
        Ok(list.templates)
    }

    fn put_reply_templates(&self, templates: Vec<ReplyTemplate>) -> Result<()> {
        use base64::Engine as _;
        use prost::Message as _;
        let bytes = ReplyTemplateList { templates }.encode_to_vec();
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        self.core.store.set_setting(REPLY_TEMPLATES, &text)
    }

    /// Saves a reply template: a new one (`id` `None`), or a new title, language and text for
    /// the template `id`. Returns it as kept. Refused with [`ClientError::InvalidArgument`]:
    /// an empty title or text, a title over [`MAX_REPLY_TEMPLATE_TITLE`] characters, a text over
    /// [`MAX_REPLY_TEMPLATE_BYTES`] bytes, a language that is not a tag (`fr`, `zh_CN`), a new
    /// template beyond [`MAX_REPLY_TEMPLATES`], an `id` this device does not have.
    pub fn save_reply_template(
        &self,
        id: Option<u64>,
        title: &str,
        language: &str,
        text: &str,
    ) -> Result<ReplyTemplate> {
        let refuse = |why: String| Err(ClientError::InvalidArgument(why));
        let title = title.trim();
        let language = language.trim();
        if title.is_empty() {
            return refuse("a reply template needs a title".into());
        }
        if title.chars().count() > MAX_REPLY_TEMPLATE_TITLE {
            return refuse(format!(
                "a reply template's title has at most {MAX_REPLY_TEMPLATE_TITLE} characters"
            ));
        }
        if text.trim().is_empty() {
            return refuse("a reply template needs a text".into());
        }
        if text.len() > MAX_REPLY_TEMPLATE_BYTES {
            return refuse(format!(
                "a reply template's text has at most {MAX_REPLY_TEMPLATE_BYTES} bytes (this one {})",
                text.len()
            ));
        }
        if !is_language_tag(language) {
            return refuse(format!(
                "{language:?} is not a language tag (such as fr, en, ar, fa, zh_CN)"
            ));
        }
        let mut templates = self.reply_templates()?;
        let kept = match id {
            Some(id) => {
                let Some(t) = templates.iter_mut().find(|t| t.id == id) else {
                    return refuse(format!("this device has no reply template {id}"));
                };
                t.title = title.to_string();
                t.language = language.to_string();
                t.text = text.to_string();
                t.clone()
            }
            None => {
                if templates.len() >= MAX_REPLY_TEMPLATES {
                    return refuse(format!(
                        "at most {MAX_REPLY_TEMPLATES} reply templates are kept: delete one first"
                    ));
                }
                let mut id = rand::random_range(1..=u64::MAX);
                while templates.iter().any(|t| t.id == id) {
                    id = rand::random_range(1..=u64::MAX);
                }
                let t = ReplyTemplate {
                    id,
                    title: title.to_string(),
                    language: language.to_string(),
                    text: text.to_string(),
                };
                templates.push(t.clone());
                t
            }
        };
        self.put_reply_templates(templates)?;
        Ok(kept)
    }

    /// Deletes the reply template `id`; an error if this device has none by that id.
    pub fn delete_reply_template(&self, id: u64) -> Result<()> {
        let mut templates = self.reply_templates()?;
        let before = templates.len();
        templates.retain(|t| t.id != id);
        if templates.len() == before {
            return Err(ClientError::InvalidArgument(format!(
                "this device has no reply template {id}"
            )));
        }
        self.put_reply_templates(templates)
    }

    /// The safety number of a user's identity key, as both ends show it: the key's half of a
    /// Signal safety number ([`refuge_proto::safety_number::safety_number`]) under the user's
    /// address (`user:<hash>`, which the key determines) as the stable identifier. The user app
    /// shows the same number for its own key, so that a member of staff can compare it with
    /// the one the user reads to them over another channel.
    pub fn user_safety_number_of(
        identity: &libsignal_protocol::IdentityKey,
    ) -> refuge_proto::safety_number::SafetyNumber {
        let name = crate::peer::Peer::user_for(identity).name();
        refuge_proto::safety_number::safety_number(&identity.serialize(), name.as_bytes())
    }

    /// The identity key of the user of `case_id` (full id or unique prefix), as this device
    /// holds it from the user's messages; `None` if none is kept (no message decrypted yet).
    fn user_identity(&self, case_id: &str) -> Result<Option<libsignal_protocol::IdentityKey>> {
        use rusqlite::OptionalExtension as _;
        let case = self.case(case_id)?;
        let peer = crate::peer::Peer::User {
            hash: case.case_id.clone(),
        };
        let bytes: Option<Vec<u8>> = self
            .core
            .store
            .conn()
            .query_row(
                "SELECT identity_key FROM identities WHERE address = ?1",
                [peer.name()],
                |r| r.get(0),
            )
            .optional()?;
        let Some(bytes) = bytes else { return Ok(None) };
        let key = libsignal_protocol::IdentityKey::decode(&bytes)
            .map_err(|e| ClientError::Corrupt(format!("a user's stored identity key: {e}")))?;
        // The case id is the hash of the key: a stored key that does not hash to it is not
        // this user's.
        if crate::peer::Peer::user_for(&key) != peer {
            return Err(ClientError::Corrupt(
                "a user's stored identity key does not match its case".into(),
            ));
        }
        Ok(Some(key))
    }

    /// The safety number of the user of `case_id` (six groups of five digits); `None` if this
    /// device holds no key of theirs yet.
    pub fn user_safety_number(
        &self,
        case_id: &str,
    ) -> Result<Option<refuge_proto::safety_number::SafetyNumber>> {
        Ok(self
            .user_identity(case_id)?
            .map(|key| InboxClient::user_safety_number_of(&key)))
    }

    /// Whether a member of staff marked the user's safety number of `case_id` as verified on
    /// this device (compared with the number the user read to them). Bound to the number: a
    /// mark made for another number does not count.
    pub fn user_key_verified(&self, case_id: &str) -> Result<bool> {
        Ok(self.user_key_status(case_id)?.1)
    }

    /// The user's safety number of `case_id` and whether it is marked as verified on this
    /// device ([`InboxClient::user_safety_number`], [`InboxClient::user_key_verified`]), the
    /// number computed once (5,200 SHA-512 rounds).
    pub fn user_key_status(
        &self,
        case_id: &str,
    ) -> Result<(Option<refuge_proto::safety_number::SafetyNumber>, bool)> {
        let case = self.case(case_id)?;
        let Some(number) = self.user_safety_number(&case.case_id)? else {
            return Ok((None, false));
        };
        let stored = self
            .core
            .store
            .setting(&format!("{KEY_VERIFIED}{}", case.case_id))?;
        let verified = stored.is_some_and(|s| s == number.digits());
        Ok((Some(number), verified))
    }

    /// Marks the user's safety number of `case_id` as verified on this device (`on`), or takes
    /// the mark off. Only this device's store holds it; an error if no key of the user is kept.
    pub fn set_user_key_verified(&self, case_id: &str, on: bool) -> Result<()> {
        let case = self.case(case_id)?;
        let key = format!("{KEY_VERIFIED}{}", case.case_id);
        if !on {
            return self.core.store.set_setting(&key, "");
        }
        let Some(number) = self.user_safety_number(&case.case_id)? else {
            return Err(ClientError::InvalidArgument(format!(
                "this device holds no key of the user of case {case_id} yet"
            )));
        };
        self.core.store.set_setting(&key, &number.digits())
    }

    // ------------------------------------------------------------ attachments (issue 18)

    /// Keeps a file to send with a reply (its metadata already removed, or kept on the
    /// person's explicit choice), in the encrypted store. The same bytes prepared again while
    /// an earlier preparation is not sent give that one back (its upload goes on).
    pub fn prepare_attachment(&self, file: &crate::store::NewAttachment<'_>) -> Result<i64> {
        self.core.store.prepare_attachment(file)
    }

    /// Forgets a file prepared with [`Self::prepare_attachment`] that no message carries (the
    /// person removed it before sending): it leaves the store at once rather than after the
    /// week an unsent preparation is kept. Returns what went (a file a message carries stays
    /// with its message); if its upload had begun, [`Self::delete_relay_copy`] deletes the
    /// relay's copy.
    pub fn discard_attachment(&self, id: i64) -> Result<crate::store::Discarded> {
        self.core.store.discard_unsent_attachment(id)
    }

    /// Deletes, on a circuit of its own, the relay's copy of a file [`Self::discard_attachment`]
    /// forgot, if its upload had begun: it no longer counts against the recipients' quotas.
    /// Without it, the copy goes with the relay's sweep.
    pub async fn delete_relay_copy(&mut self, discarded: &crate::store::Discarded) -> Result<()> {
        if !matches!(discarded, crate::store::Discarded::Uploaded { .. }) {
            return Ok(());
        }
        let mut session = self.fresh_session().await?;
        let done = crate::transfer::delete_relay_copy(&mut session, discarded).await;
        session.close().await;
        done
    }

    /// A session to the relay the stored policy names, on a circuit of its own.
    async fn fresh_session(&self) -> Result<crate::transport::Session> {
        let source = self.core.policy()?;
        let endpoint = self.core.endpoint_for(Some(&source.policy))?;
        self.core.connect(&endpoint, &super::fresh_circuit()).await
    }

    /// Downloads, on a connection of its own, the files users sent that have not arrived
    /// whole: each chunk opened and checked into the encrypted store, the whole checked before
    /// it can be exported. Returns what arrived, what was refused for good (each also kept as
    /// failed, with why) and what waits for room on the disk.
    pub async fn download_attachments(&mut self) -> Result<crate::transfer::Downloads> {
        if self.core.store.attachments_to_download()?.is_empty() {
            return Ok(crate::transfer::Downloads::default());
        }
        let mut session = self.fresh_session().await?;
        let events = self.events().clone();
        let done = self
            .staff()?
            .download_attachments(&mut session, &events)
            .await;
        session.close().await;
        done
    }

    /// The files of a case message (its id in [`InboxClient::case_messages`]).
    pub fn attachments_of(&self, case_message: i64) -> Result<Vec<crate::store::AttachmentRow>> {
        self.core.store.attachments_of_case_message(case_message)
    }

    /// Writes a file that arrived whole (or one this device sent) to a new file at `path`.
    pub fn export_attachment(&self, id: i64, path: &std::path::Path) -> Result<u64> {
        crate::transfer::export(&self.core.store, id, path)
    }
}

/// A wait drawn uniformly from zero to `max`, to the millisecond.
fn pick_delay(max: Duration) -> Duration {
    let max = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(0..=max))
}
