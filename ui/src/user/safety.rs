//! Safety numbers of a post's staff devices, and the key-change check that blocks sending.
//!
//! Every device in the verified directory was checked against the ministry's transparency log
//! (and cosigned by the policy's witnesses, unless the deployment is an unwitnessed test). On top
//! of that, the app remembers in the encrypted store the numbers the person has seen for each
//! post; a device whose number is not among those seen (a new key under an old label, or a new
//! device) is a change, and nothing is sent to the post until the person has looked at the new
//! numbers
//! ([`record_seen`]). A post seen for the first time records its numbers silently: they come
//! from the verified log, and there is nothing earlier to compare with.

use refuge_client::error::Result;
use refuge_client::store::Store;
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::safety_number::device_safety_number;
use std::collections::BTreeMap;

/// A staff device as the safety screen shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceView {
    pub label: String,
    /// Six groups of five digits.
    pub number: String,
    /// Verified in the witnessed log (false only in an unwitnessed test deployment).
    pub verified: bool,
    /// The number differs from the one the person saw under this label.
    pub changed: bool,
}

/// What a device's QR code holds: its label and its number as shown, so that any QR reader (a
/// phone's camera) shows the same text the ministry publishes.
pub fn qr_text(label: &str, number: &str) -> String {
    format!("{label}: {number}")
}

fn key(post: &str) -> String {
    format!("app.safety_seen.{post}")
}

fn current(dir: &VerifiedDirectory, post: &str) -> BTreeMap<String, String> {
    dir.post(post)
        .map(|p| {
            p.devices
                .iter()
                .map(|d| {
                    let n = device_safety_number(&d.identity_key, &d.label).display();
                    (d.label.clone(), n)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn seen(store: &Store, post: &str) -> Result<Option<BTreeMap<String, String>>> {
    Ok(store.setting(&key(post))?.map(|text| {
        text.lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(label, number)| (label.to_string(), number.to_string()))
            .collect()
    }))
}

fn save(store: &Store, post: &str, numbers: &BTreeMap<String, String>) -> Result<()> {
    let text: Vec<String> = numbers.iter().map(|(l, n)| format!("{l}\t{n}")).collect();
    store.set_setting(&key(post), &text.join("\n"))
}

/// The post's devices with their numbers, whether each is verified and whether it changed.
/// The first time a post is shown, its numbers are recorded as seen.
pub fn devices(store: &Store, dir: &VerifiedDirectory, post: &str) -> Result<Vec<DeviceView>> {
    let now = current(dir, post);
    let before = match seen(store, post)? {
        Some(b) => b,
        None => {
            save(store, post, &now)?;
            now.clone()
        }
    };
    let witnessed = !store
        .policy()?
        .is_some_and(|source| source.policy.is_unwitnessed());
    Ok(now
        .into_iter()
        .map(|(label, number)| DeviceView {
            // A number not among those seen is a change, whether its label is new or not:
            // a new key is a new key.
            changed: before.get(&label) != Some(&number),
            label,
            number,
            verified: witnessed,
        })
        .collect())
}

/// Whether a device of `post` has a number other than the one the person saw.
pub fn changed(store: &Store, dir: &VerifiedDirectory, post: &str) -> Result<bool> {
    Ok(devices(store, dir, post)?.iter().any(|d| d.changed))
}

/// Records the post's current numbers as seen by the person.
pub fn record_seen(store: &Store, dir: &VerifiedDirectory, post: &str) -> Result<()> {
    save(store, post, &current(dir, post))
}
