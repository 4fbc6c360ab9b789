//! A staff device's side (`refuge-inbox`): device keys and the enrolment request, registration
//! with the relay (prekeys), reading first contacts and messages into cases, and replying.

use crate::delivery::{
    self, Arrival, ReceiveReport, ReceivedMessage, Recipient, hour, unix_seconds,
};
use crate::disappearing::Timer;
use crate::envelope::{self, MAX_TEXT_LEN, Opened};
use crate::error::{ClientError, Result};
use crate::outbox;
use crate::peer::Peer;
use crate::peer::StaffPins;
use crate::prekeys::{self, PrekeyPlan, REPLENISH_BELOW, TARGET_ONE_TIME};
use crate::relay::{self, Relay};
use crate::secret::{SecretText, os_rng};
use crate::store::{
    CaseSummary, LocalIdentity, MessageRef, Outgoing, Role, StaffDeviceRecord, Store,
    generate_signing_key,
};
use crate::sync::{CheckedOp, LocalAuthor, LocalChange, Roster};
use prost::Message;
use rand::RngCore;
use refuge_proto::MAX_ONE_TIME_PREKEYS;
use refuge_proto::content::{Content, Text, content::Body};
use refuge_proto::directory::{VerifiedDirectory, check_device};
use refuge_proto::directory_pb::{EnrollmentRequest, StaffDevice};
use refuge_proto::ids::{DepositToken, MailboxId};
use refuge_proto::wire::PrekeyCount;
use std::time::SystemTime;

mod colleagues;

pub use colleagues::{
    Applied, CopyFate, HISTORY_ACCEPT_SECS, SyncReport, accept_history_from, send_copy,
};

const PREKEYS_UPLOADED: &str = "prekeys_uploaded";

/// This staff device.
pub struct Staff<'s> {
    store: &'s Store,
    identity: LocalIdentity,
    /// This device's identity key, serialized as the directory enrols it.
    identity_key: Vec<u8>,
    device: StaffDeviceRecord,
    me: Peer,
}

impl std::fmt::Debug for Staff<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staff")
            .field("label", &self.device.label)
            .finish_non_exhaustive()
    }
}

impl<'s> Staff<'s> {
    /// Creates the device's keys (identity, Ed25519 auth key, random mailbox id) and returns
    /// the enrolment request to hand to the authority.
    pub fn init(
        store: &'s Store,
        post_id: &str,
        label: &str,
    ) -> Result<(Staff<'s>, EnrollmentRequest)> {
        if store.local_identity()?.is_some() {
            return Err(ClientError::AlreadyInitialized {
                what: "a device identity",
                dir: store.dir().to_path_buf(),
            });
        }
        let identity = LocalIdentity::generate(Role::Staff);
        let mut id = [0u8; 16];
        os_rng().fill_bytes(&mut id);
        let device = StaffDeviceRecord {
            label: label.to_string(),
            post_id: post_id.to_string(),
            mailbox_id: MailboxId(id),
            auth_key: generate_signing_key(),
        };
        let request = EnrollmentRequest {
            post_id: post_id.to_string(),
            label: label.to_string(),
            identity_key: identity.identity_key()?.serialize().to_vec(),
            auth_key: device.auth_key.verifying_key().as_bytes().to_vec(),
            mailbox_id: device.mailbox_id.0.to_vec(),
        };
        // The same checks the authority will make, so a typo fails here and not there.
        check_device(
            post_id,
            &StaffDevice {
                label: request.label.clone(),
                identity_key: request.identity_key.clone(),
                auth_key: request.auth_key.clone(),
                mailbox_id: request.mailbox_id.clone(),
            },
        )
        .map_err(ClientError::InvalidArgument)?;
        let tx = store.begin()?;
        store.save_local_identity(&identity)?;
        store.save_staff_device(&device)?;
        tx.commit()?;
        Ok((Staff::load(store)?, request))
    }

    pub fn load(store: &'s Store) -> Result<Staff<'s>> {
        let not_init = || ClientError::NotInitialized {
            what: "refuge-inbox",
            dir: store.dir().to_path_buf(),
            command: "refuge-inbox init",
        };
        let identity = store.local_identity()?.ok_or_else(not_init)?;
        if identity.role != Role::Staff {
            return Err(ClientError::InvalidArgument(format!(
                "{} holds a refuge user, not a staff inbox",
                store.dir().display()
            )));
        }
        let device = store.staff_device()?.ok_or_else(not_init)?;
        let me = Peer::staff(&device.label);
        let identity_key = identity.identity_key()?.serialize().to_vec();
        Ok(Staff {
            store,
            identity,
            identity_key,
            device,
            me,
        })
    }

    pub fn label(&self) -> &str {
        &self.device.label
    }

    pub fn enrollment_request(&self) -> Result<EnrollmentRequest> {
        Ok(EnrollmentRequest {
            post_id: self.device.post_id.clone(),
            label: self.device.label.clone(),
            identity_key: self.identity.identity_key()?.serialize().to_vec(),
            auth_key: self.device.auth_key.verifying_key().as_bytes().to_vec(),
            mailbox_id: self.device.mailbox_id.0.to_vec(),
        })
    }

    /// Checks that the verified directory lists this device with exactly its keys.
    pub fn check_enrolled(&self, directory: &VerifiedDirectory) -> Result<()> {
        let label = self.device.label.clone();
        let (post, dev) = directory
            .device_by_label(&self.device.label)
            .ok_or_else(|| ClientError::NotEnrolled {
                label: label.clone(),
                reason: "the directory has no entry for it yet",
            })?;
        let req = self.enrollment_request()?;
        if post.id != self.device.post_id
            || dev.identity_key != req.identity_key
            || dev.auth_key != req.auth_key
            || dev.mailbox_id != req.mailbox_id
        {
            return Err(ClientError::NotEnrolled {
                label,
                reason: "the directory lists this label with other keys (enrolled from another \
                         request, or this device was initialised again)",
            });
        }
        Ok(())
    }

    /// Uploads prekeys: on first registration a signed prekey, a Kyber last-resort prekey and
    /// [`TARGET_ONE_TIME`] one-time prekeys of each kind; afterwards new signed and last-resort
    /// prekeys and a top-up to the target.
    pub async fn register(&self, relay: &mut dyn Relay, now: SystemTime) -> Result<PrekeyCount> {
        relay::authenticate(relay, &self.device.mailbox_id, &self.device.auth_key).await?;
        let held = if self.store.setting(PREKEYS_UPLOADED)?.is_some() {
            relay::prekey_count(relay, &self.device.mailbox_id).await?
        } else {
            PrekeyCount {
                one_time: 0,
                kyber_one_time: 0,
            }
        };
        let plan = PrekeyPlan {
            signed_and_last_resort: true,
            one_time: top_up(held.one_time),
            kyber_one_time: top_up(held.kyber_one_time),
        };
        let count = self.upload(relay, plan, now).await?;
        self.store.set_setting(PREKEYS_UPLOADED, "1")?;
        self.replenish_reply_tickets(relay, now).await;
        Ok(count)
    }

    /// Keeps the device's prekeys in order after a read, given what the relay says it holds:
    /// tops one-time prekeys up when fewer than [`REPLENISH_BELOW`] of either kind remain,
    /// replaces the signed and last-resort prekeys every [`prekeys::ROTATE_EVERY`], and, after a
    /// read that emptied the mailbox, deletes those replaced [`prekeys::KEEP_REPLACED`] ago.
    /// Returns the new count if it uploaded.
    async fn maintain(
        &self,
        relay: &mut dyn Relay,
        held: PrekeyCount,
        mailbox_emptied: bool,
        now: SystemTime,
    ) -> Result<Option<PrekeyCount>> {
        let rotate = prekeys::rotation_due(self.store, now)?;
        let low = held.one_time < REPLENISH_BELOW || held.kyber_one_time < REPLENISH_BELOW;
        let uploaded = if rotate || low {
            let plan = PrekeyPlan {
                signed_and_last_resort: rotate,
                one_time: if low { top_up(held.one_time) } else { 0 },
                kyber_one_time: if low { top_up(held.kyber_one_time) } else { 0 },
            };
            Some(self.upload(relay, plan, now).await?)
        } else {
            None
        };
        if mailbox_emptied {
            let keep = i64::try_from(prekeys::KEEP_REPLACED.as_secs()).unwrap_or(i64::MAX);
            let deleted = self
                .store
                .delete_replaced_prekeys(unix_seconds(now).saturating_sub(keep))?;
            if deleted > 0 {
                tracing::debug!("deleted {deleted} replaced prekeys");
            }
        }
        Ok(uploaded)
    }

    async fn upload(
        &self,
        relay: &mut dyn Relay,
        plan: PrekeyPlan,
        now: SystemTime,
    ) -> Result<PrekeyCount> {
        let tx = self.store.begin()?;
        let upload = prekeys::generate(
            self.store,
            &self.identity,
            &self.device.mailbox_id,
            plan,
            now,
        )?;
        tx.commit()?;
        let count = relay::upload_prekeys(relay, upload.clone()).await?;
        // Only keys the relay confirmed count as handed out (and replace the current ones). The
        // hour of the confirmation, never earlier than the clock says now: `now` was taken when
        // the run began, and a key recorded as older than it is could make an honest relay
        // look as if it held keys back (`check_last_resort_uses`).
        let confirmed = hour_i64(now).max(hour_i64(self.store.now()));
        let tx = self.store.begin()?;
        self.store.confirm_prekey_upload(&upload, confirmed)?;
        tx.commit()?;
        Ok(count)
    }

    /// Reads new messages into cases (shown through `show`), acknowledges them, checks the
    /// prekeys first contacts were made with against what the relay still holds, and keeps the
    /// prekeys in order ([`Staff::maintain`]).
    pub async fn read(
        &self,
        relay: &mut dyn Relay,
        directory: &VerifiedDirectory,
        now: SystemTime,
        show: &mut dyn FnMut(&ReceivedMessage) -> Result<()>,
    ) -> Result<ReceiveReport> {
        let recipient = self.recipient(directory)?;
        let mut report = delivery::receive(
            self.store,
            relay,
            &self.device.mailbox_id,
            &self.device.auth_key,
            &recipient,
            now,
            show,
        )
        .await?;
        let held = relay::prekey_count(relay, &self.device.mailbox_id).await?;
        self.check_last_resort_uses(&mut report, held, now)?;
        // Replaced keys are deleted only after a read that emptied the mailbox: what waits on
        // the relay may have been made with them.
        self.maintain(relay, held, !report.more_waiting, now)
            .await?;
        self.replenish_reply_tickets(relay, now).await;
        Ok(report)
    }

    /// Registers the day's batch of reply tickets with the relay, on the first read of each
    /// day (UTC), on the session that just read (it is authenticated). Always the same number
    /// on the same schedule, however many replies the device sends, so that registrations say
    /// nothing about how much it answers; a device that runs out hands out fewer until the next
    /// day, and those users pay a proof of work. Its pool keeps at most [`TICKET_POOL`] (the
    /// newest). A refusal is logged and the read goes on.
    async fn replenish_reply_tickets(&self, relay: &mut dyn Relay, now: SystemTime) {
        let today = (unix_seconds(now) / 86_400).to_string();
        let result = async {
            if self.store.setting(REPLY_TICKETS_DAY)?.as_deref() == Some(today.as_str()) {
                return Ok(None);
            }
            let tickets: Vec<DepositToken> = (0..TICKET_BATCH)
                .map(|_| DepositToken(rand::random()))
                .collect();
            let held =
                relay::register_reply_tickets(relay, &self.device.mailbox_id, &tickets).await?;
            // The hour of the confirmation, as for prekeys.
            let confirmed = unix_seconds(now).max(unix_seconds(self.store.now()));
            let tx = self.store.begin()?;
            self.store
                .keep_issued_tickets(&tickets, confirmed, TICKET_POOL)?;
            self.store.set_setting(REPLY_TICKETS_DAY, &today)?;
            tx.commit()?;
            Ok::<_, ClientError>(Some(held))
        }
        .await;
        match result {
            Ok(Some(held)) => tracing::debug!(held, "registered reply tickets"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not register reply tickets"),
        }
    }

    /// A relay hands out a one-time Kyber prekey while it holds one, and the last-resort key
    /// only when it holds none. Once the whole mailbox is read, the relay says how many it
    /// holds; at most the unused ones this device uploaded in or after the hour a sender
    /// fetched its bundle can be newer than that fetch. If the relay holds more, it held one of
    /// the older keys when it served that sender the last-resort key: it stripped the first
    /// contact of the one-time Kyber key's forward secrecy. (Keys handed out for bundles never
    /// used are no longer held by the relay, so they raise no false alarm; a relay that also
    /// under-reports what it holds escapes this check, and SECURITY.md says so.)
    fn check_last_resort_uses(
        &self,
        report: &mut ReceiveReport,
        held: PrekeyCount,
        now: SystemTime,
    ) -> Result<()> {
        for fetched_hour in std::mem::take(&mut report.last_resort_uses) {
            let hour = i64::try_from(fetched_hour).unwrap_or(i64::MAX);
            let newer = self.store.kyber_one_time_uploaded_since(hour)?;
            if u64::from(held.kyber_one_time) > newer {
                let what = format!(
                    "a first contact was made with the Kyber last-resort prekey while the relay \
                     held {} one-time Kyber prekeys, at least {} of them uploaded before the \
                     sender fetched the keys",
                    held.kyber_one_time,
                    u64::from(held.kyber_one_time) - newer
                );
                self.store.record_misbehaviour(
                    unix_seconds(now),
                    "kyber-last-resort-served",
                    &what,
                    None,
                )?;
                report.misbehaviour.push(what);
            }
        }
        Ok(())
    }

    /// Replies to a case's user at once, on `relay`: [`Staff::queue_reply`] then
    /// [`Staff::send_replies`]. The programs do the two apart, with a random delay and a
    /// connection of its own between them (SECURITY.md: the relay must not tie a reply to the
    /// read that prompted it).
    pub async fn reply(
        &self,
        relay: &mut dyn Relay,
        directory: &VerifiedDirectory,
        case_id: &str,
        text: &SecretText,
        now: SystemTime,
    ) -> Result<outbox::SendReport> {
        let row = self.queue_reply(directory, case_id, text, now).await?;
        self.send_replies(relay, directory, &[row]).await
    }

    /// Sends what waits in the outbox on `relay`, and says what became of `rows` (replies
    /// queued by this run): an error if one of them was refused or is still waiting.
    pub async fn send_replies(
        &self,
        relay: &mut dyn Relay,
        directory: &VerifiedDirectory,
        rows: &[i64],
    ) -> Result<outbox::SendReport> {
        let mut sent = outbox::send_pending(self.store, relay, directory).await?;
        outbox::settle(self.store, &mut sent, rows)?;
        Ok(sent)
    }

    /// Seals a reply to a case's user with the disappearing-message timer the user last chose
    /// (so the reply disappears from the relay, the user's store and ours), records it in the
    /// case and puts it in the outbox, without touching the network. Returns its outbox row.
    pub async fn queue_reply(
        &self,
        directory: &VerifiedDirectory,
        case_id: &str,
        text: &SecretText,
        now: SystemTime,
    ) -> Result<i64> {
        self.queue_reply_with(directory, case_id, text, now, &[])
            .await
    }

    /// A case this device can reply to, with the user's reply address taken out of it.
    fn repliable_case(
        &self,
        case_id: &str,
    ) -> Result<(crate::store::CaseRecord, MailboxId, DepositToken)> {
        let mut case = self
            .store
            .case(case_id)?
            .ok_or_else(|| ClientError::UnknownCase {
                case: case_id.to_string(),
            })?;
        let (mailbox, token) = case
            .reply
            .take()
            .ok_or_else(|| ClientError::NoReplyAddress {
                case: case_id.to_string(),
            })?;
        Ok((case, mailbox, token))
    }

    /// Uploads files (ids of `Store::prepare_attachment`) for a reply to a case's user: each
    /// addressed to the user's mailbox, admitted with the user's deposit token, going on from
    /// wherever an earlier attempt stopped. [`Staff::queue_reply_with`] then sends their
    /// pointers.
    pub async fn upload_for_case(
        &self,
        relay: &mut dyn Relay,
        case_id: &str,
        attachments: &[i64],
        events: &crate::events::Events,
    ) -> Result<()> {
        let (case, mailbox, token) = self.repliable_case(case_id)?;
        let timer = Timer::class_at_most(case.disappear_seconds);
        for id in attachments {
            crate::transfer::upload(
                self.store,
                relay,
                *id,
                &[(mailbox, token.clone())],
                timer,
                events,
            )
            .await?;
        }
        Ok(())
    }

    /// Downloads the files users sent this device that have not arrived whole (authenticating
    /// `relay` for the device's mailbox): each opened and checked into the encrypted store.
    /// Returns what arrived, what was refused for good and what waits for room on the disk.
    pub async fn download_attachments(
        &self,
        relay: &mut dyn Relay,
        events: &crate::events::Events,
    ) -> Result<crate::transfer::Downloads> {
        if self.store.attachments_to_download()?.is_empty() {
            return Ok(crate::transfer::Downloads::default());
        }
        relay::authenticate(relay, &self.device.mailbox_id, &self.device.auth_key).await?;
        crate::transfer::download_waiting(self.store, relay, &self.device.mailbox_id, events).await
    }

    /// [`Staff::queue_reply`] carrying files already uploaded ([`Staff::upload_for_case`]).
    pub async fn queue_reply_with(
        &self,
        directory: &VerifiedDirectory,
        case_id: &str,
        text: &SecretText,
        now: SystemTime,
        attachments: &[i64],
    ) -> Result<i64> {
        if attachments.len() > crate::attachment::MAX_ATTACHMENTS_PER_MESSAGE {
            return Err(ClientError::InvalidArgument(format!(
                "{} files; a message carries at most {}",
                attachments.len(),
                crate::attachment::MAX_ATTACHMENTS_PER_MESSAGE
            )));
        }
        let pointers = attachments
            .iter()
            .map(|id| crate::transfer::uploaded_pointer(self.store, *id).map(|p| p.to_proto()))
            .collect::<Result<Vec<_>>>()?;
        // Named in the reply's copy for colleagues (issue 18, ADR 0013): names, sizes and types
        // only; the keys stay with this device and the user.
        let files = attachments
            .iter()
            .map(|id| {
                let row = self.store.attachment(*id)?.ok_or_else(|| {
                    ClientError::InvalidArgument(format!("no attachment {id} is kept"))
                })?;
                Ok(crate::sync::FileMention {
                    name: row.file_name,
                    size: row.size,
                    content_type: row.content_type,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if text.expose().len() > MAX_TEXT_LEN {
            return Err(ClientError::MessageTooLong {
                len: text.expose().len(),
                max: MAX_TEXT_LEN,
            });
        }
        let (case, mailbox, token) = self.repliable_case(case_id)?;
        let user = Peer::parse(&case.user_address)
            .filter(|p| matches!(p, Peer::User { .. }))
            .ok_or_else(|| ClientError::Corrupt("case address".into()))?;
        // Stored as received cases' class; taken down to a class again in case an older version
        // stored another value.
        let timer = Timer::class_at_most(case.disappear_seconds);
        let pins = StaffPins::from_directory(directory)?;
        let certificate = envelope::issue_sender_certificate(&self.identity, &self.me, now)?;
        let tx = self.store.begin()?;
        // Chosen at random among those registered, and gone from the pool with this reply.
        let reply_tickets = self
            .store
            .take_issued_tickets(TICKETS_PER_REPLY, unix_seconds(now))?
            .into_iter()
            .map(|t| t.0.to_vec())
            .collect();
        let sealed = {
            let mut stores = self.store.signal(&pins);
            let content = Content {
                body: Some(Body::Text(Text {
                    text: text.expose().to_string(),
                })),
                disappear_after_seconds: timer.seconds(),
                prekeys_fetched_hour: 0,
                reply_tickets,
                attachments: pointers,
            };
            envelope::seal(&mut stores, &user, &certificate, content, now).await?
        };
        // Recorded in the case and put in the outbox with the ratchet step that sealed it; sent
        // from the outbox (crate::outbox), after whatever earlier runs left there. The case
        // keeps the reply whatever the relay answers: the command says if it was refused.
        // Our copy goes when the outbox copy would (the hour it is sealed in plus the timer), so
        // a reply whose time ran out unsent never shows as still waiting.
        let message = self.store.add_case_message(
            &case.case_id,
            false,
            text,
            hour(now),
            timer.expires_hour(hour(now) as i64),
        )?;
        // The files go with the reply (its timer, its deletion).
        for id in attachments {
            self.store.attachment_sent(
                *id,
                None,
                Some(message),
                timer.expires_hour(hour(now) as i64),
            )?;
        }
        // The post's devices share their replies (ADR 0012): the reply is an operation on the
        // case too, kept in the same transaction.
        let op = self
            .store
            .record_case_op(
                &self.author(),
                &case.case_id,
                LocalChange::Reply {
                    text: text.clone(),
                    files,
                    at_hour: hour(now),
                    timer_seconds: timer.seconds(),
                },
                Some(message),
            )?
            .map_err(ClientError::from)?;
        // Sealed for the colleagues at the first sync round after the relay confirmed the
        // reply, never if it is dropped (ADR 0012, defect 7).
        self.keep_unsent(&op, case.disappear_seconds)?;
        let row = self.store.queue_outgoing(
            &Outgoing {
                mailbox,
                token: Some(token),
                idempotency_id: rand::random(),
                sealed,
                timer,
                label: None,
                first_contact: false,
                conversation: None,
                case_message: Some(message),
            },
            unix_seconds(now),
        )?;
        tx.commit()?;
        Ok(row)
    }

    pub fn cases(&self) -> Result<Vec<CaseSummary>> {
        self.store.cases()
    }

    /// This device as the recipient of its staff mailbox and its sync mailbox.
    fn recipient(&self, directory: &VerifiedDirectory) -> Result<StaffRecipient> {
        Ok(StaffRecipient {
            me: self.me.clone(),
            post_id: self.device.post_id.clone(),
            pins: StaffPins::from_directory(directory)?,
            devices: directory
                .post(&self.device.post_id)
                .map(|p| p.devices.iter().map(|d| d.label.clone()).collect())
                .unwrap_or_default(),
            roster: self.roster(directory),
            sync: Default::default(),
            via: crate::store::Via::Own,
            mailbox: self.device.mailbox_id,
        })
    }
}

/// The post as a team (ADR 0012): this device's changes to the shared state of its cases.
impl Staff<'_> {
    /// This device, as the author of case operations.
    pub fn author(&self) -> LocalAuthor {
        LocalAuthor::new(&self.device.label, &self.identity_key)
    }

    /// This device's post as `directory` lists it: its colleagues, who a case may be handed
    /// to, which cases need reassignment.
    pub fn roster(&self, directory: &VerifiedDirectory) -> Roster {
        Roster::from_directory(
            directory,
            &self.device.label,
            &self.identity_key,
            &self.device.post_id,
        )
    }

    /// Makes a change to a case (its id, or a unique prefix of at least 8) and keeps it with
    /// the case's state, in one transaction; returns the operation. Replies are not made here:
    /// [`Staff::queue_reply`] records them with the message it sends.
    pub fn change_case(&self, case_id: &str, change: LocalChange) -> Result<CheckedOp> {
        if matches!(change, LocalChange::Reply { .. }) {
            return Err(ClientError::InvalidArgument(
                "a reply is recorded when it is sent, not as a change to its case".into(),
            ));
        }
        let case = self
            .store
            .case(case_id)?
            .ok_or_else(|| ClientError::UnknownCase {
                case: case_id.to_string(),
            })?;
        let tx = self.store.begin()?;
        let op = self
            .store
            .record_case_op(&self.author(), &case.case_id, change, None)??;
        // Sealed for the colleagues at the next sync round (ADR 0012).
        self.keep_unsent(&op, case.disappear_seconds)?;
        tx.commit()?;
        Ok(op)
    }
}

/// Reply tickets handed to the user in each reply (ADR 0010): its next messages to the post go
/// in with them, past any flood of first contacts.
pub const TICKETS_PER_REPLY: usize = 2;

/// Reply tickets registered each day (ADR 0010): 100 replies' worth. At most 200 a day for 45
/// days stay under the relay's 10,000 unused per device.
pub const TICKET_BATCH: usize = 200;

/// Most registered tickets a device keeps to hand out (the newest).
pub const TICKET_POOL: usize = 400;

/// The day (Unix days) of the last registration of reply tickets.
const REPLY_TICKETS_DAY: &str = "reply_tickets_day";

fn hour_i64(now: SystemTime) -> i64 {
    i64::try_from(hour(now)).unwrap_or(i64::MAX)
}

fn top_up(held: u32) -> u32 {
    let cap = MAX_ONE_TIME_PREKEYS as u32;
    TARGET_ONE_TIME
        .saturating_sub(held)
        .min(cap.saturating_sub(held))
}

/// Serialized enrolment request, for the file handed to the authority.
pub fn encode_request(req: &EnrollmentRequest) -> Vec<u8> {
    req.encode_to_vec()
}

struct StaffRecipient {
    me: Peer,
    post_id: String,
    pins: StaffPins,
    /// The labels of the post's devices in the verified directory (this one included).
    devices: Vec<String>,
    /// The post as the verified directory lists it: who may send its sync messages.
    roster: Roster,
    /// What colleagues' sync messages did in this read.
    sync: std::cell::RefCell<SyncReport>,
    /// The mailbox read: the staff mailbox, or the sync mailbox (ADR 0012).
    via: crate::store::Via,
    /// The device's staff mailbox: the one users' files are addressed to (issue 18).
    mailbox: MailboxId,
}

impl StaffRecipient {
    /// The post's devices a first contact sealed for `sealed_for` did not reach: the relay
    /// handed out no keys for them. Nothing when the list is empty (a version before it).
    fn not_sealed_for(&self, sealed_for: &[String]) -> Vec<String> {
        if sealed_for.is_empty() {
            return Vec::new();
        }
        self.devices
            .iter()
            .filter(|d| !sealed_for.contains(d))
            .cloned()
            .collect()
    }
}

impl Recipient for StaffRecipient {
    fn me(&self) -> &Peer {
        &self.me
    }

    fn pins(&self) -> &StaffPins {
        &self.pins
    }

    fn via(&self) -> crate::store::Via {
        self.via
    }

    fn check_mailbox(
        &self,
        via: crate::store::Via,
        sender: &Peer,
        content: Option<&Content>,
    ) -> std::result::Result<(), String> {
        self.mailbox_rule(via, sender, content)
    }

    fn accept(
        &self,
        store: &Store,
        mut opened: Opened,
        arrival: Arrival,
    ) -> Result<Option<SecretText>> {
        // A colleague's copy of the post's case state (ADR 0012): kept, not shown.
        if let Peer::Staff { label } = &opened.sender {
            let label = label.clone();
            self.accept_sync(store, &label, opened.content.body.take(), arrival.timer)?;
            return Ok(None);
        }
        let case_id = match opened.sender.case_id() {
            Some(c) => c,
            None => {
                return Err(ClientError::PossibleImpersonation(
                    "a staff inbox only accepts messages from users".into(),
                ));
            }
        };
        let user_address = opened.sender.name();
        let text = match opened.content.body.as_mut() {
            Some(Body::FirstContact(f)) => {
                if f.post_id != self.post_id {
                    return Err(ClientError::Undecryptable(
                        "a first contact meant for another post".into(),
                    ));
                }
                let reply = f.reply_to.as_ref().ok_or_else(|| {
                    ClientError::Undecryptable("a first contact without a reply address".into())
                })?;
                let mailbox = MailboxId::from_slice(&reply.mailbox_id)
                    .map_err(|e| ClientError::Undecryptable(format!("reply address: {e}")))?;
                let token = DepositToken::from_slice(&reply.deposit_token)
                    .map_err(|e| ClientError::Undecryptable(format!("reply address: {e}")))?;
                store.upsert_case(&case_id, &user_address, Some((&mailbox, &token)))?;
                store.set_case_not_sealed_for(&case_id, &self.not_sealed_for(&f.sealed_for))?;
                SecretText::new(std::mem::take(&mut f.text))
            }
            Some(Body::Text(t)) => {
                // A text before any first contact (which may have been lost) still opens a
                // case; a reply needs the address that only a first contact carries.
                store.upsert_case(&case_id, &user_address, None)?;
                SecretText::new(std::mem::take(&mut t.text))
            }
            // Only the post's own devices send these (ADR 0012), never a user.
            Some(Body::Sync(_)) => {
                return Err(ClientError::PossibleImpersonation(
                    "a user sent a message only the post's own devices may send".into(),
                ));
            }
            None => return Err(ClientError::Undecryptable("empty content".into())),
        };
        // The case's shared state starts here (`new`) if the case is new (ADR 0012).
        store.open_case_state(&case_id)?;
        // The user's latest choice of timer applies to the case's replies from now on.
        store.set_case_timer(&case_id, arrival.timer.seconds())?;
        let message = store.add_case_message(
            &case_id,
            true,
            &text,
            arrival.received_hour,
            arrival.expires_hour,
        )?;
        // The files the message carries, to download (ADR 0013): kept with the message.
        store.offer_attachments(
            &opened.content.attachments,
            &self.mailbox,
            MessageRef::Case(message),
            arrival.expires_hour,
        )?;
        Ok(Some(text))
    }
}
