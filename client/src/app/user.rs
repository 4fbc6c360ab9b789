//! [`UserClient`]: what the at-risk user's programs (`refuge`, the desktop app) stand on.

use super::core::{Core, Reach, after_round, open_existing};
use super::{DIRECTORY_REFRESH, PollSchedule, fresh_circuit};
use crate::clock::SharedClock;
use crate::config::{PolicySource, TorSettings};
use crate::delivery::{ReceiveReport, ReceivedMessage};
use crate::disappearing::Timer;
use crate::error::{Blame, ClientError, Result};
use crate::events::{Event, Events};
use crate::net::Network;
use crate::outbox::{self, EarlierReport};
use crate::secret::SecretText;
use crate::store::{ConversationMessage, ConversationSummary, KdfParams, Passphrase, Store};
use crate::transport::RelayEndpoint;
use crate::user::{ContactReport, User};
use refuge_proto::client_policy::ClientPolicy;
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::directory_pb::Post;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// How a user client is set up: where its state is, how it reaches the relay.
#[derive(Clone, Debug, Default)]
pub struct UserSettings {
    pub data_dir: PathBuf,
    /// A relay address to use instead of the remembered one (or the one the policy names); only
    /// the policy's own addresses are accepted once a policy is in force.
    pub relay: Option<String>,
    /// The relay's certificate pin, for a `quic://` relay.
    pub pin: Option<String>,
    /// Whether a direct (non-Tor) relay may be used: tests and development only.
    pub allow_direct: bool,
    /// Whether a client policy marked as a test deployment may be used.
    pub allow_test_deployment: bool,
    /// How to reach Tor; `None`: as remembered from the last `init` that worked.
    pub tor: Option<TorSettings>,
}

/// What one [`UserClient::receive`] did.
#[derive(Debug, Default)]
pub struct ReceiveSummary {
    /// What the read of the mailbox did.
    pub report: ReceiveReport,
    /// What became of the messages the outbox held from earlier, sent first.
    pub earlier: EarlierReport,
    /// Why the outbox could not be sent (it is tried again next time); the read went on.
    pub outbox_error: Option<ClientError>,
    /// The messages that arrived, as kept in the conversations.
    pub arrived: Vec<ConversationMessage>,
}

/// The at-risk user's client: one encrypted store, one Tor client, the verified directory.
#[derive(Debug)]
pub struct UserClient {
    core: Core,
}

impl UserClient {
    /// Opens the existing store in `settings.data_dir` with `passphrase`.
    pub fn unlock(settings: UserSettings, passphrase: &Passphrase, events: Events) -> Result<Self> {
        let store = open_existing(&settings.data_dir, passphrase, "refuge", "refuge init")?;
        UserClient::with_store(store, settings, events)
    }

    /// Creates a new store in `settings.data_dir` under `passphrase` (nothing is created on the
    /// relay until [`UserClient::init`]).
    pub fn create(
        settings: UserSettings,
        passphrase: &Passphrase,
        params: KdfParams,
        events: Events,
    ) -> Result<Self> {
        let store = Store::create(&settings.data_dir, passphrase, params)?;
        UserClient::with_store(store, settings, events)
    }

    /// A client over an open store.
    pub fn with_store(store: Store, settings: UserSettings, events: Events) -> Result<Self> {
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
            "client policy (refuge init --policy)",
        )?;
        Ok(UserClient { core })
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

    /// Hands the open store back, to open a client over it again with other settings (the
    /// desktop app does so when the person chooses bridges after Tor was blocked) without
    /// asking for the passphrase again.
    pub fn into_store(self) -> Store {
        self.core.store
    }

    pub fn events(&self) -> &Events {
        self.core.events()
    }

    pub fn network(&self) -> &Network {
        &self.core.network
    }

    /// Whether this device is set up: `init` has run to its end (the identity, the mailbox on
    /// the relay and the policy it was made under). An `init` cut short (a lost connection, an
    /// app closed or locked midway) leaves an identity without a policy: not set up, and `init`
    /// may run again (it re-creates the same mailbox).
    pub fn is_initialized(&self) -> Result<bool> {
        let store = &self.core.store;
        Ok(store.user_mailbox()?.is_some() && store.policy()?.is_some())
    }

    /// The relay to use under `policy`: the one given, else the one remembered, else the one
    /// the policy names.
    pub fn endpoint_for(&self, policy: Option<&ClientPolicy>) -> Result<RelayEndpoint> {
        self.core.endpoint_for(policy)
    }

    /// Creates the identity and the mailbox on the relay, after the directory has verified
    /// under `source`; remembers the policy, the relay and the Tor settings only once all of
    /// that worked. Run again, it re-creates the same mailbox.
    pub async fn init(&mut self, mut source: PolicySource) -> Result<()> {
        self.core.allow_deployment(&mut source);
        let endpoint = self.core.endpoint_for(Some(&source.policy))?;
        // The directory must verify before anything is created on the relay.
        self.core.sync_with(&source, &endpoint).await?;
        let user = User::init(&self.core.store)?;
        let mut session = self.core.connect(&endpoint, &user.mailbox_id().0).await?;
        let created = user.create_mailbox(&mut session).await;
        session.close().await;
        created?;
        let store = &self.core.store;
        store.save_policy(&source)?;
        store.save_relay(&endpoint)?;
        store.save_tor_settings(self.core.network.settings())?;
        Ok(())
    }

    fn user(&self) -> Result<User<'_>> {
        User::load(&self.core.store)
    }

    /// Downloads and verifies the directory (on a circuit of its own) under the stored policy.
    pub async fn sync_directory(&mut self) -> Result<&VerifiedDirectory> {
        self.user()?;
        let source = self.core.policy()?;
        let endpoint = self.core.endpoint_for(Some(&source.policy))?;
        self.core.sync_with(&source, &endpoint).await
    }

    /// The directory verified last by this client, if any.
    pub fn directory(&self) -> Option<&VerifiedDirectory> {
        self.core.directory.as_ref()
    }

    async fn directory_within(&mut self, max_age: Duration) -> Result<VerifiedDirectory> {
        self.user()?;
        self.core.directory_within(max_age).await
    }

    /// The posts of the verified directory (verified again if older than
    /// [`DIRECTORY_REFRESH`](super::DIRECTORY_REFRESH)).
    pub async fn posts(&mut self) -> Result<Vec<Post>> {
        Ok(self
            .directory_within(DIRECTORY_REFRESH)
            .await?
            .posts()
            .to_vec())
    }

    /// Writes `text` to every staff device of `post_id`, disappearing after `timer` (else the
    /// default timer). The directory is downloaded and verified again first (a revoked device
    /// gets nothing), and the post and text checked against it before anything is sealed;
    /// sealed into the outbox, then sent (with whatever the outbox held) on a circuit of its
    /// own, never the one that reads the user's mailbox.
    pub async fn contact(
        &mut self,
        post_id: &str,
        text: &SecretText,
        timer: Option<Timer>,
    ) -> Result<ContactReport> {
        self.contact_with(post_id, text, timer, &[]).await
    }

    /// [`UserClient::contact`] with files (ids of [`UserClient::prepare_attachment`]): each
    /// uploaded once for all the post's devices the message goes to, on the message's circuit,
    /// before the message is sealed. An upload cut short fails the send (nothing is sealed);
    /// sending the same files again goes on from the last chunk the relay confirmed.
    pub async fn contact_with(
        &mut self,
        post_id: &str,
        text: &SecretText,
        timer: Option<Timer>,
        attachments: &[i64],
    ) -> Result<ContactReport> {
        let directory = self.directory_within(Duration::ZERO).await?;
        crate::user::check_contact(&directory, post_id, text)?;
        self.seal_and_send(&directory, post_id, text, timer, attachments)
            .await
    }

    /// [`UserClient::contact`], if `approve` accepts the directory the message is about to be
    /// sealed for (downloaded and verified for this message; the post and text checked against
    /// it). A front end's check of the keys with the person (the app's safety numbers) thereby
    /// runs on exactly the devices the message goes to, not on a directory read a moment
    /// before, which a device enrolled in between would not be in. `Ok(None)`: not approved;
    /// nothing was sealed or sent (the directory is kept: [`UserClient::directory`]).
    pub async fn contact_approved(
        &mut self,
        post_id: &str,
        text: &SecretText,
        timer: Option<Timer>,
        approve: impl FnOnce(&Store, &VerifiedDirectory) -> Result<bool>,
    ) -> Result<Option<ContactReport>> {
        let directory = self.directory_within(Duration::ZERO).await?;
        crate::user::check_contact(&directory, post_id, text)?;
        if !approve(&self.core.store, &directory)? {
            return Ok(None);
        }
        let report = self
            .seal_and_send(&directory, post_id, text, timer, &[])
            .await?;
        Ok(Some(report))
    }

    /// [`UserClient::contact_approved`] with files, as [`UserClient::contact_with`].
    pub async fn contact_approved_with(
        &mut self,
        post_id: &str,
        text: &SecretText,
        timer: Option<Timer>,
        attachments: &[i64],
        approve: impl FnOnce(&Store, &VerifiedDirectory) -> Result<bool>,
    ) -> Result<Option<ContactReport>> {
        let directory = self.directory_within(Duration::ZERO).await?;
        crate::user::check_contact(&directory, post_id, text)?;
        if !approve(&self.core.store, &directory)? {
            return Ok(None);
        }
        let report = self
            .seal_and_send(&directory, post_id, text, timer, attachments)
            .await?;
        Ok(Some(report))
    }

    /// Keeps a file to send (its metadata already removed, or kept on the person's explicit
    /// choice), in the encrypted store. The same bytes prepared again while an earlier
    /// preparation is not sent give that one back (its upload goes on).
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
        let endpoint = self.core.endpoint()?;
        let mut session = self.core.connect(&endpoint, &fresh_circuit()).await?;
        let done = crate::transfer::delete_relay_copy(&mut session, discarded).await;
        session.close().await;
        done
    }

    /// Downloads, on a circuit of its own, the files staff sent that have not arrived whole:
    /// each chunk opened and checked into the encrypted store, the whole checked before it can
    /// be exported. Returns what arrived, what was refused for good and what waits for room.
    pub async fn download_attachments(&mut self) -> Result<crate::transfer::Downloads> {
        if self.core.store.attachments_to_download()?.is_empty() {
            return Ok(crate::transfer::Downloads::default());
        }
        let endpoint = self.core.endpoint()?;
        let mut session = self.core.connect(&endpoint, &fresh_circuit()).await?;
        let user = self.user()?.with_events(self.events().clone());
        let done = user.download_attachments(&mut session).await;
        session.close().await;
        done
    }

    /// The files of a conversation message (its id in [`UserClient::conversation`]).
    pub fn attachments_of(&self, message: i64) -> Result<Vec<crate::store::AttachmentRow>> {
        self.core.store.attachments_of_message(message)
    }

    /// Writes a file that arrived whole (or one this user sent) to a new file at `path`.
    pub fn export_attachment(&self, id: i64, path: &std::path::Path) -> Result<u64> {
        crate::transfer::export(&self.core.store, id, path)
    }

    /// Seals `text` for the devices of `post_id` in `directory` into the outbox, then sends it
    /// (with whatever the outbox held) on a circuit of its own, never the one that reads the
    /// user's mailbox.
    async fn seal_and_send(
        &mut self,
        directory: &VerifiedDirectory,
        post_id: &str,
        text: &SecretText,
        timer: Option<Timer>,
        attachments: &[i64],
    ) -> Result<ContactReport> {
        let timer = match timer {
            Some(t) => t,
            None => self.core.store.default_timer()?,
        };
        let endpoint = self.core.endpoint()?;
        let mut session = self.core.connect(&endpoint, &fresh_circuit()).await?;
        let user = self.user()?.with_events(self.events().clone());
        let now = self.core.store.now();
        let sent = user
            .contact_with(
                &mut session,
                directory,
                post_id,
                text,
                timer,
                now,
                attachments,
            )
            .await;
        session.close().await;
        let report = sent?;
        self.report_state(report.message)?;
        Ok(report)
    }

    /// Reports the state message `id` is in now.
    fn report_state(&self, id: i64) -> Result<()> {
        if let Some(m) = self.core.store.message(id)?
            && let Some(delivery) = m.delivery
        {
            self.events().emit(Event::Message {
                message: m.id,
                post: m.post_id,
                delivery,
            });
        }
        Ok(())
    }

    /// Sends what the outbox holds (on a circuit of its own), then reads the user's mailbox (on
    /// its own circuit): opens, keeps in the conversations and acknowledges every reply. The
    /// directory that authenticates staff is verified again if older than
    /// [`DIRECTORY_REFRESH`](super::DIRECTORY_REFRESH).
    /// `show` sees each new message once, as it is opened. An outbox that cannot be sent does
    /// not stop the read (it is in the summary), unless it may be an attack.
    pub async fn receive(
        &mut self,
        show: &mut dyn FnMut(&ReceivedMessage) -> Result<()>,
    ) -> Result<ReceiveSummary> {
        let directory = self.directory_within(DIRECTORY_REFRESH).await?;
        let endpoint = self.core.endpoint()?;
        let mut summary = ReceiveSummary::default();
        match self.send_outbox(&endpoint, &directory).await {
            Ok(earlier) => summary.earlier = earlier,
            Err(e) if e.blame() == Blame::Attack => return Err(e),
            Err(e) => summary.outbox_error = Some(e),
        }
        let store = &self.core.store;
        let last = store.last_message_id()?;
        let user = self.user()?;
        let mut session = self.core.connect(&endpoint, &user.mailbox_id().0).await?;
        let read = user.read(&mut session, &directory, store.now(), show).await;
        session.close().await;
        summary.report = read?;
        summary.arrived = store.arrived_since(last)?;
        for m in &summary.arrived {
            self.events().emit(Event::Arrived {
                message: m.id,
                post: m.post_id.clone(),
                from: m.device.clone().unwrap_or_default(),
            });
        }
        Ok(summary)
    }

    /// Sends what earlier runs left in the outbox, if anything, and reports the messages whose
    /// state that changed.
    async fn send_outbox(
        &self,
        endpoint: &RelayEndpoint,
        directory: &VerifiedDirectory,
    ) -> Result<EarlierReport> {
        let store = &self.core.store;
        let waiting = store.outbox()?;
        if waiting.is_empty() {
            return Ok(EarlierReport::default());
        }
        let mut session = self.core.connect(endpoint, &fresh_circuit()).await?;
        let sent = outbox::send_pending(store, &mut session, directory).await;
        session.close().await;
        let report = EarlierReport::of(&sent?);
        let mut seen = std::collections::HashSet::new();
        for id in waiting.iter().filter_map(|p| p.message.conversation) {
            if seen.insert(id) {
                self.report_state(id)?;
            }
        }
        Ok(report)
    }

    /// Receives now and then every [`PollSchedule`] wait, until `stop` completes. A failed
    /// read is reported as [`Event::ReceiveFailed`] and tried again after a longer wait; one
    /// that may be an attack ends the loop with its error.
    pub async fn receive_until(
        &mut self,
        mut schedule: PollSchedule,
        stop: impl Future<Output = ()>,
    ) -> Result<()> {
        let mut stop = std::pin::pin!(stop);
        loop {
            let outcome = self.receive(&mut |_| Ok(())).await;
            let events = self.events().clone();
            if !after_round(&events, &mut schedule, outcome, stop.as_mut()).await? {
                return Ok(());
            }
        }
    }

    /// The conversations, the one with the latest message first.
    pub fn conversations(&self) -> Result<Vec<ConversationSummary>> {
        self.user()?;
        self.core.store.conversations()
    }

    /// Up to `limit` messages with `post_id` before message `before` (the newest if `None`),
    /// oldest first.
    pub fn conversation(
        &self,
        post_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ConversationMessage>> {
        self.user()?;
        self.core.store.conversation(post_id, before, limit)
    }

    /// Marks the messages from `post_id` with ids in `ids` (those a view showed) as read.
    pub fn mark_read(&self, post_id: &str, ids: std::ops::RangeInclusive<i64>) -> Result<u64> {
        self.user()?;
        self.core.store.mark_seen(post_id, ids)
    }

    /// Deletes the conversation with `post_id` from this device; returns how many messages
    /// were deleted. (The staff's copies are theirs: a timer is what deletes those.)
    pub fn forget_conversation(&self, post_id: &str) -> Result<u64> {
        self.user()?;
        self.core.store.forget_conversation(post_id)
    }

    /// Messages of ours the relay has not confirmed yet, across conversations.
    pub fn queued(&self) -> Result<u64> {
        Ok(self.conversations()?.iter().map(|c| c.queued).sum())
    }

    pub fn default_timer(&self) -> Result<Timer> {
        self.core.store.default_timer()
    }

    pub fn set_default_timer(&self, timer: Timer) -> Result<()> {
        self.core.store.set_default_timer(timer)
    }

    /// Re-encrypts the store under `new`.
    pub fn change_passphrase(&mut self, new: &Passphrase, params: KdfParams) -> Result<()> {
        self.core.store.change_passphrase(new, params)
    }
}
