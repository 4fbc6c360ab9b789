//! The at-risk user's side (`refuge`): a pseudonymous identity, a mailbox for replies, first
//! contact with every staff device of a post, and reading replies.

use crate::delivery::{self, Arrival, ReceiveReport, ReceivedMessage, Recipient};
use crate::disappearing::Timer;
use crate::envelope::{self, MAX_TEXT_LEN, Opened, coarse_day};
use crate::error::{ClientError, Result};
use crate::events::{Delivery, Event, Events};
use crate::outbox;
use crate::peer::StaffPins;
use crate::peer::{Peer, device_id};
use crate::relay::{self, Relay};
use crate::secret::{SecretText, os_rng};
use crate::store::{
    Contact, Direction, LocalIdentity, NewMessage, Outgoing, Role, Store, UserMailbox,
};
use crate::transfer;
use libsignal_protocol::{
    IdentityKey, PreKeyBundle, PreKeyId, PublicKey, SignalProtocolError, kem, process_prekey_bundle,
};
use refuge_proto::content::{Content, FirstContact, ReplyAddress, Text, content::Body};
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::directory_pb::StaffDevice;
use refuge_proto::ids::MailboxId;
use refuge_proto::wire::DeviceBundle;
use std::collections::HashSet;
use std::time::SystemTime;

/// A user's local identity and mailbox.
pub struct User<'s> {
    store: &'s Store,
    identity: LocalIdentity,
    mailbox: UserMailbox,
    me: Peer,
    events: Events,
}

impl std::fmt::Debug for User<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User").finish_non_exhaustive()
    }
}

/// Result of a contact: which devices got the message, and which did not because the relay
/// handed out no keys for them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ContactReport {
    /// The message in the user's conversation with the post.
    pub message: i64,
    pub sent: Vec<String>,
    /// Devices of the post (per the verified directory) the message was not sealed for: we hold
    /// no session with them and the relay's answer had no prekey bundle for them. Either the
    /// device has not registered, or the relay withheld its keys; the user cannot tell which,
    /// so a front end says what is known: "the relay handed out no keys for desk-N". The
    /// devices that did get the message see the same list (`FirstContact.sealed_for`).
    pub no_keys: Vec<String>,
    /// What became of the messages earlier runs had left in the outbox.
    pub earlier: outbox::EarlierReport,
}

impl<'s> User<'s> {
    /// Creates the identity and mailbox keys if this data directory has none; keeps them
    /// otherwise (so that a repeated init re-creates the same mailbox on the relay).
    pub fn init(store: &'s Store) -> Result<User<'s>> {
        match store.local_identity()? {
            Some(id) if id.role != Role::User => {
                return Err(ClientError::AlreadyInitialized {
                    what: "a staff inbox",
                    dir: store.dir().to_path_buf(),
                });
            }
            Some(_) => {}
            None => {
                let tx = store.begin()?;
                store.save_local_identity(&LocalIdentity::generate(Role::User))?;
                store.save_user_mailbox(&UserMailbox::generate())?;
                tx.commit()?;
            }
        }
        User::load(store)
    }

    pub fn load(store: &'s Store) -> Result<User<'s>> {
        let not_init = || ClientError::NotInitialized {
            what: "refuge",
            dir: store.dir().to_path_buf(),
            command: "refuge init",
        };
        let identity = store.local_identity()?.ok_or_else(not_init)?;
        if identity.role != Role::User {
            return Err(ClientError::InvalidArgument(format!(
                "{} holds a staff inbox, not a refuge user",
                store.dir().display()
            )));
        }
        let mailbox = store.user_mailbox()?.ok_or_else(not_init)?;
        let me = Peer::user_for(&identity.identity_key()?);
        Ok(User {
            store,
            identity,
            mailbox,
            me,
            events: Events::default(),
        })
    }

    /// Reports the messages this user queues to `events`.
    pub fn with_events(self, events: Events) -> Self {
        User { events, ..self }
    }

    /// Our address (derived from our identity key).
    pub fn address(&self) -> &Peer {
        &self.me
    }

    pub fn mailbox_id(&self) -> &MailboxId {
        &self.mailbox.mailbox_id
    }

    /// Creates our mailbox on the relay (idempotent).
    pub async fn create_mailbox(&self, relay: &mut dyn Relay) -> Result<()> {
        relay::create_mailbox(
            relay,
            &self.mailbox.mailbox_id,
            &self.mailbox.auth_key,
            &self.mailbox.deposit_token,
        )
        .await
    }

    /// Writes `text` to every staff device of `post_id`, asking that every copy disappear after
    /// `timer`.
    ///
    /// Devices we already hold a session with (keyed to the directory's identity key) reuse it.
    /// For the others, the relay's prekey bundles are fetched and *every* bundle is checked
    /// against the verified directory (label, identity key, mailbox) before anything is
    /// encrypted: one mismatch refuses the whole send. The ratchet state is committed before
    /// the first deposit, so no message key is ever used twice.
    pub async fn contact(
        &self,
        relay: &mut dyn Relay,
        directory: &VerifiedDirectory,
        post_id: &str,
        text: &SecretText,
        timer: Timer,
        now: SystemTime,
    ) -> Result<ContactReport> {
        self.contact_with(relay, directory, post_id, text, timer, now, &[])
            .await
    }

    /// [`User::contact`] with files (ids of `Store::prepare_attachment`): each is uploaded
    /// first, once for all the devices the message goes to, admitted with the same ticket as
    /// the message's deposits; then the message carries their pointers. An upload cut short
    /// fails the send before anything is sealed; sending the same files again goes on from the
    /// last chunk the relay confirmed.
    #[allow(clippy::too_many_arguments)]
    pub async fn contact_with(
        &self,
        relay: &mut dyn Relay,
        directory: &VerifiedDirectory,
        post_id: &str,
        text: &SecretText,
        timer: Timer,
        now: SystemTime,
        attachments: &[i64],
    ) -> Result<ContactReport> {
        if attachments.len() > crate::attachment::MAX_ATTACHMENTS_PER_MESSAGE {
            return Err(ClientError::InvalidArgument(format!(
                "{} files; a message carries at most {}",
                attachments.len(),
                crate::attachment::MAX_ATTACHMENTS_PER_MESSAGE
            )));
        }
        let post = check_contact(directory, post_id, text)?;
        let pins = StaffPins::from_directory(directory)?;

        let mut with_session = Vec::new();
        let mut need_bundle = Vec::new();
        for dev in &post.devices {
            let peer = Peer::staff(&dev.label);
            match self.store.usable_session_identity(&peer, now)? {
                Some(k) if pins.get(&dev.label) == Some(&k) => with_session.push(dev),
                _ => need_bundle.push(dev),
            }
        }

        // Every deposit into a staff mailbox carries an admission ticket for the post (ADR
        // 0010): the bundles' for a first contact; otherwise a reply ticket the post sent
        // (taken below, in the transaction that queues the messages, so a failure before
        // loses none), or one paid with a proof of work when none is held.
        let (bundles, bought) = if need_bundle.is_empty() {
            let bought = if self.store.reply_tickets_held(post_id)? == 0 {
                Some(relay::get_deposit_ticket(relay, post_id).await?)
            } else {
                None
            };
            (Vec::new(), bought)
        } else {
            let (bundles, ticket) =
                relay::fetch_post_bundles(relay, post_id, post.devices.len()).await?;
            check_bundles(post_id, &post.devices, &need_bundle, &bundles)?;
            (bundles, Some(ticket))
        };

        // Files first (ADR 0013): one blob each for every device the message will reach,
        // admitted with the ticket the deposits use (taken now, so the blob and the deposits
        // share it; a relay admits 8 blobs per ticket and mailbox besides the deposit).
        let mut bought = bought;
        let mut pointers = Vec::with_capacity(attachments.len());
        if !attachments.is_empty() {
            let ticket = match bought.take() {
                Some(t) => t,
                None => match self
                    .store
                    .take_reply_ticket(post_id, delivery::unix_seconds(now))?
                {
                    Some(t) => t,
                    None => relay::get_deposit_ticket(relay, post_id).await?,
                },
            };
            let mut recipients = Vec::new();
            for dev in need_bundle
                .iter()
                .filter(|d| bundles.iter().any(|b| b.label == d.label))
                .chain(with_session.iter())
            {
                let mailbox = MailboxId::from_slice(&dev.mailbox_id)
                    .map_err(|e| ClientError::Corrupt(format!("directory mailbox id: {e}")))?;
                recipients.push((mailbox, ticket.clone()));
            }
            if !recipients.is_empty() {
                for id in attachments {
                    let p =
                        transfer::upload(self.store, relay, *id, &recipients, timer, &self.events)
                            .await?;
                    pointers.push(p.to_proto());
                }
            }
            bought = Some(ticket);
        }

        let tx = self.store.begin()?;
        let ticket = match bought {
            Some(t) => t,
            None => match self
                .store
                .take_reply_ticket(post_id, delivery::unix_seconds(now))?
            {
                Some(t) => t,
                // Held a moment ago, too old now: pay after all (outside the transaction).
                None => {
                    drop(tx);
                    return Box::pin(self.contact(relay, directory, post_id, text, timer, now))
                        .await;
                }
            },
        };
        let mut stores = self.store.signal(&pins);
        let mut rng = os_rng();
        // (device, whether it gets the FirstContact, whether its session starts now)
        let mut targets: Vec<(&StaffDevice, bool, bool)> = Vec::new();
        let mut no_keys = Vec::new();
        for dev in need_bundle {
            let Some(b) = bundles.iter().find(|b| b.label == dev.label) else {
                no_keys.push(dev.label.clone());
                continue;
            };
            start_session(&mut stores, &dev.label, b, now, &mut rng).await?;
            targets.push((dev, true, true));
        }
        for dev in with_session {
            let delivered = self
                .store
                .contact(&dev.label)?
                .is_some_and(|c| c.first_contact_delivered && c.post_id == post_id);
            targets.push((dev, !delivered, false));
        }
        // In directory order, whichever way each device is reached.
        targets.sort_by_key(|(d, _, _)| post.devices.iter().position(|x| x.label == d.label));
        if targets.is_empty() {
            return Err(ClientError::Relay {
                code: refuge_proto::ErrorCode::NoDevices,
                message: format!(
                    "the relay handed out no keys for any device of {post_id} (none has \
                     registered, or the relay withholds them)"
                ),
            });
        }
        // Sealed inside every copy, so that each device sees which colleagues got none.
        let sealed_for: Vec<String> = targets.iter().map(|(d, _, _)| d.label.clone()).collect();

        // The message as the user's conversation shows it: one entry, whatever the number of
        // copies; the relay's confirmations of the copies move its state.
        let message = self.store.add_message(&NewMessage {
            post_id,
            direction: Direction::Out,
            device: None,
            text,
            at: delivery::unix_seconds(now),
            timer,
            expires_hour: timer.expires_hour(delivery::hour(now) as i64),
            copies: u32::try_from(targets.len()).unwrap_or(u32::MAX),
        })?;
        let certificate = envelope::issue_sender_certificate(&self.identity, &self.me, now)?;
        // Each sealed message goes into the outbox in the transaction that advanced the
        // ratchet for it; it is sent from there (crate::outbox).
        let mut queued = Vec::with_capacity(targets.len());
        for (dev, first, new_session) in &targets {
            let mailbox = MailboxId::from_slice(&dev.mailbox_id)
                .map_err(|e| ClientError::Corrupt(format!("directory mailbox id: {e}")))?;
            let body = if *first {
                Body::FirstContact(FirstContact {
                    post_id: post_id.to_string(),
                    reply_to: Some(ReplyAddress {
                        mailbox_id: self.mailbox.mailbox_id.0.to_vec(),
                        deposit_token: self.mailbox.deposit_token.0.to_vec(),
                    }),
                    text: text.expose().to_string(),
                    sealed_for: sealed_for.clone(),
                })
            } else {
                Body::Text(Text {
                    text: text.expose().to_string(),
                })
            };
            let bytes = envelope::seal(
                &mut stores,
                &Peer::staff(&dev.label),
                &certificate,
                Content {
                    body: Some(body),
                    disappear_after_seconds: timer.seconds(),
                    // Lets the device tell honest exhaustion of its one-time Kyber keys from a
                    // relay that served the last-resort key while some remained.
                    prekeys_fetched_hour: if *new_session { delivery::hour(now) } else { 0 },
                    reply_tickets: Vec::new(),
                    attachments: pointers.clone(),
                },
                now,
            )
            .await?;
            let row = self.store.queue_outgoing(
                &Outgoing {
                    mailbox,
                    token: Some(ticket.clone()),
                    idempotency_id: rand::random(),
                    sealed: bytes,
                    timer,
                    label: Some(dev.label.clone()),
                    first_contact: *first,
                    conversation: Some(message),
                    case_message: None,
                },
                delivery::unix_seconds(now),
            )?;
            queued.push(row);
            // A first contact (for this post) is marked delivered when the relay confirms it
            // (`Store::outgoing_confirmed`).
            if *first {
                self.store.save_contact(&Contact {
                    label: dev.label.clone(),
                    post_id: post_id.to_string(),
                    first_contact_delivered: false,
                })?;
            }
        }
        // The files now go with the message (its timer, its deletion).
        for id in attachments {
            self.store.attachment_sent(
                *id,
                Some(message),
                None,
                timer.expires_hour(delivery::hour(now) as i64),
            )?;
        }
        tx.commit()?;
        self.events.emit(Event::Message {
            message,
            post: post_id.to_string(),
            delivery: Delivery::Queued,
        });

        // Whatever earlier runs left in the outbox goes first, then these.
        let mut sent = outbox::send_pending(self.store, relay, directory).await?;
        // Confirmed in the order they were queued: the directory's.
        let labels: Vec<String> = sent
            .confirmed
            .iter()
            .filter(|(row, _)| queued.contains(row))
            .filter_map(|(_, label)| label.clone())
            .collect();
        outbox::settle(self.store, &mut sent, &queued)?;
        Ok(ContactReport {
            message,
            sent: labels,
            no_keys,
            earlier: outbox::EarlierReport::of(&sent),
        })
    }

    /// Downloads the files staff sent this user that have not arrived whole (authenticating
    /// `relay` for the user's mailbox): each opened and checked into the encrypted store.
    /// Returns what arrived, what was refused for good and what waits for room on the disk.
    pub async fn download_attachments(&self, relay: &mut dyn Relay) -> Result<transfer::Downloads> {
        if self.store.attachments_to_download()?.is_empty() {
            return Ok(transfer::Downloads::default());
        }
        relay::authenticate(relay, &self.mailbox.mailbox_id, &self.mailbox.auth_key).await?;
        transfer::download_waiting(self.store, relay, &self.mailbox.mailbox_id, &self.events).await
    }

    /// Reads replies: opens, shows (through `show`) and acknowledges them.
    pub async fn read(
        &self,
        relay: &mut dyn Relay,
        directory: &VerifiedDirectory,
        now: SystemTime,
        show: &mut dyn FnMut(&ReceivedMessage) -> Result<()>,
    ) -> Result<ReceiveReport> {
        let recipient = UserRecipient {
            mailbox: self.mailbox.mailbox_id,
            me: self.me.clone(),
            pins: StaffPins::from_directory(directory)?,
            posts: directory
                .posts()
                .iter()
                .flat_map(|p| p.devices.iter().map(|d| (d.label.clone(), p.id.clone())))
                .collect(),
        };
        delivery::receive(
            self.store,
            relay,
            &self.mailbox.mailbox_id,
            &self.mailbox.auth_key,
            &recipient,
            now,
            show,
        )
        .await
    }
}

struct UserRecipient {
    me: Peer,
    pins: StaffPins,
    /// The post of each staff device, from the verified directory.
    posts: std::collections::HashMap<String, String>,
    /// The user's mailbox: the one staff's files are addressed to (issue 18).
    mailbox: MailboxId,
}

impl Recipient for UserRecipient {
    fn me(&self) -> &Peer {
        &self.me
    }

    fn pins(&self) -> &StaffPins {
        &self.pins
    }

    fn accept(
        &self,
        store: &Store,
        mut opened: Opened,
        arrival: Arrival,
    ) -> Result<Option<SecretText>> {
        let Peer::Staff { label } = &opened.sender else {
            return Err(ClientError::PossibleImpersonation(
                "a user's mailbox only accepts messages from enrolled staff".into(),
            ));
        };
        // The reply tickets that let our next messages to the post past a flood (ADR 0010),
        // kept for the post we wrote to through this device.
        if let Some(contact) = store.contact(label)? {
            let tickets: Vec<refuge_proto::ids::DepositToken> = opened
                .content
                .reply_tickets
                .iter()
                .take(MAX_TICKETS_PER_REPLY)
                .filter_map(|t| refuge_proto::ids::DepositToken::from_slice(t).ok())
                .collect();
            store.keep_reply_tickets(&contact.post_id, &tickets, store.unix_now())?;
        }
        let text = match opened.content.body.as_mut() {
            Some(Body::Text(t)) => SecretText::new(std::mem::take(&mut t.text)),
            _ => {
                return Err(ClientError::Undecryptable(
                    "unexpected content from staff".into(),
                ));
            }
        };
        // Kept in the conversation with the device's post (the directory's word for it).
        let post_id = match self.posts.get(label) {
            Some(post) => post.clone(),
            None => store.contact(label)?.map(|c| c.post_id).ok_or_else(|| {
                ClientError::PossibleImpersonation(format!(
                    "{label} is in no post of the verified directory"
                ))
            })?,
        };
        let message = store.add_message(&NewMessage {
            post_id: &post_id,
            direction: Direction::In,
            device: Some(label),
            text: &text,
            at: i64::try_from(arrival.received_hour).unwrap_or(i64::MAX),
            timer: arrival.timer,
            expires_hour: arrival.expires_hour,
            copies: 0,
        })?;
        // The files the reply carries, to download (ADR 0013): kept with the message.
        store.offer_attachments(
            &opened.content.attachments,
            &self.mailbox,
            crate::store::MessageRef::Conversation(message),
            arrival.expires_hour,
        )?;
        Ok(Some(text))
    }
}

/// Most reply tickets taken from one staff reply (staff send [`crate::staff::TICKETS_PER_REPLY`]).
const MAX_TICKETS_PER_REPLY: usize = 8;

/// The checks that need no relay: a known post with enrolled devices, a text that fits. Run
/// them before connecting, so that a mistyped post never reaches the network.
pub fn check_contact<'d>(
    directory: &'d VerifiedDirectory,
    post_id: &str,
    text: &SecretText,
) -> Result<&'d refuge_proto::directory_pb::Post> {
    if text.expose().len() > MAX_TEXT_LEN {
        return Err(ClientError::MessageTooLong {
            len: text.expose().len(),
            max: MAX_TEXT_LEN,
        });
    }
    let post = directory
        .post(post_id)
        .ok_or_else(|| ClientError::UnknownPost {
            post: post_id.to_string(),
        })?;
    if post.devices.is_empty() {
        return Err(ClientError::PostHasNoDevices {
            post: post_id.to_string(),
        });
    }
    Ok(post)
}

/// Every bundle the relay returns must be a device of the post in the verified directory,
/// with exactly the enrolled identity key and mailbox; anything else is an impersonation
/// attempt and refuses the whole send. Every bundle that will be used must carry a one-time
/// prekey.
pub(crate) fn check_bundles(
    post_id: &str,
    devices: &[StaffDevice],
    need_bundle: &[&StaffDevice],
    bundles: &[DeviceBundle],
) -> Result<()> {
    let mut seen = HashSet::new();
    for b in bundles {
        let dev = devices.iter().find(|d| d.label == b.label).ok_or_else(|| {
            ClientError::ImpersonationAttempt(format!(
                "the relay returned keys for {:?}, which is not a device of {post_id} in the signed directory",
                b.label
            ))
        })?;
        if b.identity_key != dev.identity_key {
            return Err(ClientError::ImpersonationAttempt(format!(
                "the relay returned an identity key for {} that differs from the one the authority enrolled",
                dev.label
            )));
        }
        if b.mailbox_id != dev.mailbox_id {
            return Err(ClientError::ImpersonationAttempt(format!(
                "the relay returned a mailbox for {} that differs from the enrolled one",
                dev.label
            )));
        }
        if !seen.insert(b.label.as_str()) {
            return Err(ClientError::RelayProtocol(format!(
                "two bundles for {}",
                b.label
            )));
        }
        // ADR 0004: no first contact without a one-time prekey. Checked for every bundle that
        // will be used (devices we hold a session with need none) before any is, so that
        // nothing is sealed and no session is kept.
        if b.one_time_prekey.is_none() && need_bundle.iter().any(|d| d.label == b.label) {
            return Err(ClientError::WeakBundle {
                label: b.label.clone(),
            });
        }
    }
    Ok(())
}

/// Starts a session with a staff device from its bundle (checked against the verified
/// directory by [`check_bundles`] first): its signatures are checked against its enrolled
/// identity key, and the session kept in `stores`.
pub(crate) async fn start_session(
    stores: &mut crate::store::SignalStores<'_>,
    label: &str,
    b: &DeviceBundle,
    now: SystemTime,
    rng: &mut impl rand::CryptoRng,
) -> Result<()> {
    let bundle = prekey_bundle(b)?;
    process_prekey_bundle(
        &Peer::staff(label).address(),
        &mut stores.sessions,
        &mut stores.identity,
        &bundle,
        // Kept in the session record until the peer answers: day-coarse, so that it does not
        // date the first contact (it only decides when the session is stale).
        coarse_day(now),
        rng,
    )
    .await
    .map_err(|e| match e {
        SignalProtocolError::SignatureValidationFailed => ClientError::ImpersonationAttempt(
            format!("the prekeys for {label} are not signed by its enrolled identity key"),
        ),
        SignalProtocolError::UntrustedIdentity(_) => ClientError::ImpersonationAttempt(format!(
            "the identity key for {label} is not the enrolled one"
        )),
        other => ClientError::from(other),
    })
}

/// Builds libsignal's bundle from the wire form (already checked against the directory).
fn prekey_bundle(b: &DeviceBundle) -> Result<PreKeyBundle> {
    let bad = |what: &str| ClientError::RelayProtocol(format!("bundle for {}: {what}", b.label));
    let signed = b
        .signed_prekey
        .as_ref()
        .ok_or_else(|| bad("no signed prekey"))?;
    let kyber = b
        .kyber_prekey
        .as_ref()
        .ok_or_else(|| bad("no kyber prekey"))?;
    let one_time = b
        .one_time_prekey
        .as_ref()
        .ok_or_else(|| ClientError::WeakBundle {
            label: b.label.clone(),
        })?;
    let one_time = Some((
        PreKeyId::from(one_time.id),
        PublicKey::deserialize(&one_time.public_key).map_err(|_| bad("invalid one-time prekey"))?,
    ));
    Ok(PreKeyBundle::new(
        b.registration_id,
        device_id(),
        one_time,
        signed.id.into(),
        PublicKey::deserialize(&signed.public_key).map_err(|_| bad("invalid signed prekey"))?,
        signed.signature.clone(),
        kyber.id.into(),
        kem::PublicKey::deserialize(&kyber.public_key).map_err(|_| bad("invalid kyber prekey"))?,
        kyber.signature.clone(),
        IdentityKey::decode(&b.identity_key).map_err(|_| bad("invalid identity key"))?,
    )?)
}
