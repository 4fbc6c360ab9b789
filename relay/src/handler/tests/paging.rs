//! Posts of more devices than one page of bundles covers: the first page is paid with a proof of
//! work and hands out the ticket; every later page is served only with that ticket, once, in
//! order, from the same device list; anything else is refused and spends nothing.

use super::*;
use crate::session::MailboxGrant;
use crate::store::{OneTimeKey, PrekeyUpload, SignedKey};

/// The big post of these tests.
const BIG: &str = "emb-zz";

/// `n` (at most 253) devices of [`BIG`], numbered from 3 (a and b are 1 and 2).
fn big_post(n: u8) -> Vec<Staff> {
    (0..n)
        .map(|i| staff(3 + i, BIG, &format!("desk-{i}")))
        .collect()
}

/// Uploads `one_time` one-time prekeys for each of `devices`, straight into the store.
async fn upload(h: &Harness, devices: &[Staff], one_time: u32) {
    for d in devices {
        let grant = MailboxGrant::dangerously_assume(d.mailbox);
        let key = |id, len| SignedKey {
            id,
            public_key: vec![7; len],
            signature: vec![8; PREKEY_SIGNATURE_LEN],
        };
        h.relay
            .store()
            .upload_prekeys(
                &grant,
                PrekeyUpload {
                    identity_key: d.identity_key.clone(),
                    registration_id: 77,
                    signed_prekey: Some(key(1, EC_PUBLIC_KEY_LEN)),
                    kyber_last_resort: Some(key(2, 1569)),
                    one_time: (0..one_time)
                        .map(|id| OneTimeKey {
                            id,
                            public_key: vec![id as u8; EC_PUBLIC_KEY_LEN],
                        })
                        .collect(),
                    kyber_one_time: Vec::new(),
                },
            )
            .await
            .expect("uploads");
    }
}

async fn one_time_left(h: &Harness, device: &Staff) -> u32 {
    h.relay
        .store()
        .prekey_count(&MailboxGrant::dangerously_assume(device.mailbox))
        .await
        .expect("reads")
        .one_time
}

fn page_req(post: &str, offset: u32, ticket: &[u8]) -> Request {
    Request::FetchPostBundles(wire::FetchPostBundles {
        post_id: post.into(),
        pow: None,
        offset,
        admission_ticket: ticket.to_vec(),
    })
}

async fn page(h: &mut Harness, s: &mut SessionState, req: Request) -> wire::PostBundles {
    match h.ok(s, req).await {
        Response::PostBundles(p) => p,
        other => panic!("expected bundles, got {other:?}"),
    }
}

fn labels(p: &wire::PostBundles) -> Vec<String> {
    p.bundles.iter().map(|b| b.label.clone()).collect()
}

#[tokio::test]
async fn a_post_of_150_devices_is_served_in_two_pages_for_one_proof_of_work() {
    let devices = big_post(150);
    let mut h = Harness::with_devices(&devices).await;
    // Device 120 has not registered: left out of its page, not an error.
    let registered: Vec<Staff> = devices
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 120)
        .map(|(_, d)| d.clone())
        .collect();
    upload(&h, &registered, 2).await;
    let mut s = h.session().await;

    let first = page(&mut h, &mut s, page_req(BIG, 0, &[])).await;
    assert_eq!(first.next_offset, 100);
    assert_eq!(first.admission_ticket.len(), 32);
    let expected: Vec<String> = devices[..100].iter().map(|d| d.label.clone()).collect();
    assert_eq!(
        labels(&first),
        expected,
        "the first 100, in directory order"
    );

    // The second page carries no proof of work (the harness solves one only for offset 0).
    let second = page(&mut h, &mut s, page_req(BIG, 100, &first.admission_ticket)).await;
    assert_eq!(second.next_offset, 0, "the last page");
    assert!(second.admission_ticket.is_empty());
    let expected: Vec<String> = registered[100..].iter().map(|d| d.label.clone()).collect();
    assert_eq!(labels(&second), expected);

    // One one-time prekey of each device was spent, no more.
    for d in &registered {
        assert_eq!(one_time_left(&h, d).await, 1, "{}", d.label);
    }
    // A replay of the second page is refused and spends nothing.
    let msg = h
        .refused(
            &mut s,
            page_req(BIG, 100, &first.admission_ticket),
            ErrorCode::AdmissionRequired,
        )
        .await;
    assert!(msg.contains("no further page"), "{msg}");
    // The ticket admits the fan-out's deposits into devices of either page.
    for d in [&devices[0], &devices[149]] {
        let r = h
            .ok(
                &mut s,
                deposit_req(d.mailbox, &first.admission_ticket, b"sealed".to_vec()),
            )
            .await;
        assert!(matches!(r, Response::DepositAccepted(_)), "{r:?}");
    }
}

#[tokio::test]
async fn later_pages_are_served_only_with_the_first_pages_ticket_once_and_in_order() {
    let devices = big_post(250);
    let mut h = Harness::with_devices(&devices).await;
    upload(&h, &devices, 3).await;
    let a = h.a.clone();
    upload(&h, &[a], 3).await;
    let mut s = h.session().await;

    // Without a ticket, with one the relay never issued, with one of GetDepositTicket (which
    // fetched no first page), with a malformed one.
    let msg = h
        .refused(
            &mut s,
            page_req(BIG, 100, &[]),
            ErrorCode::AdmissionRequired,
        )
        .await;
    assert!(msg.contains("offset 0"), "{msg}");
    let msg = h
        .refused(
            &mut s,
            page_req(BIG, 100, &[9; 32]),
            ErrorCode::AdmissionRequired,
        )
        .await;
    assert!(msg.contains("unknown"), "{msg}");
    let deposit_ticket = match h.ok(&mut s, ticket_req(BIG)).await {
        Response::DepositTicket(t) => t.ticket,
        other => panic!("{other:?}"),
    };
    let msg = h
        .refused(
            &mut s,
            page_req(BIG, 100, &deposit_ticket),
            ErrorCode::AdmissionRequired,
        )
        .await;
    assert!(msg.contains("no further page"), "{msg}");
    h.refused(
        &mut s,
        page_req(BIG, 100, &[9; 31]),
        ErrorCode::MalformedRequest,
    )
    .await;

    // A ticket of another post's fetch.
    let other = page(&mut h, &mut s, page_req("emb-xx", 0, &[])).await;
    assert_eq!(other.next_offset, 0, "two devices: one page");
    let msg = h
        .refused(
            &mut s,
            page_req(BIG, 100, &other.admission_ticket),
            ErrorCode::AdmissionRequired,
        )
        .await;
    assert!(msg.contains("another post"), "{msg}");

    let first = page(&mut h, &mut s, page_req(BIG, 0, &[])).await;
    let ticket = first.admission_ticket.clone();
    assert_eq!((first.bundles.len(), first.next_offset), (100, 100));
    // Skipping a page, or asking for the first page again with the ticket.
    let msg = h
        .refused(
            &mut s,
            page_req(BIG, 200, &ticket),
            ErrorCode::AdmissionRequired,
        )
        .await;
    assert!(msg.contains("next page is at offset 100"), "{msg}");
    h.refused(
        &mut s,
        page_req(BIG, 0, &ticket),
        ErrorCode::InvalidArgument,
    )
    .await;
    // A later page paid with a proof of work instead of the ticket is a client's mistake.
    let mut paid = page_req(BIG, 100, &ticket);
    if let Request::FetchPostBundles(f) = &mut paid {
        f.pow = Some(wire::PowSolution::default());
    }
    h.refused(&mut s, paid, ErrorCode::InvalidArgument).await;
    // After the ticket's time (a day and an hour, whole hours) it fetches nothing.
    let msg = h
        .refused_at(
            &mut s,
            page_req(BIG, 100, &ticket),
            ErrorCode::AdmissionRequired,
            NOW + 26 * 3600,
        )
        .await;
    assert!(msg.contains("expired"), "{msg}");

    // In order, each once.
    let second = page(&mut h, &mut s, page_req(BIG, 100, &ticket)).await;
    assert_eq!((second.bundles.len(), second.next_offset), (100, 200));
    h.refused(
        &mut s,
        page_req(BIG, 100, &ticket),
        ErrorCode::AdmissionRequired,
    )
    .await;
    let third = page(&mut h, &mut s, page_req(BIG, 200, &ticket)).await;
    assert_eq!((third.bundles.len(), third.next_offset), (50, 0));
    h.refused(
        &mut s,
        page_req(BIG, 200, &ticket),
        ErrorCode::AdmissionRequired,
    )
    .await;
    let all: Vec<String> = [&first, &second, &third]
        .iter()
        .flat_map(|p| labels(p))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (250, 250), "every device once");
    for d in &devices {
        assert_eq!(one_time_left(&h, d).await, 2, "{}", d.label);
    }
}

#[tokio::test]
async fn a_later_page_after_the_posts_device_list_changed_is_refused() {
    let devices = big_post(150);
    let mut h = Harness::with_devices(&devices).await;
    upload(&h, &devices, 2).await;
    let mut s = h.session().await;
    let first = page(&mut h, &mut s, page_req(BIG, 0, &[])).await;
    // Device 0 leaves the directory: every later device moves up one place, so offset 100 now
    // names the device the first page did not serve under the old list, or skips one.
    let (a, b) = (h.a.clone(), h.b.clone());
    let fewer: Vec<&Staff> = [&a, &b].into_iter().chain(&devices[1..]).collect();
    h.relay
        .set_roster(crate::roster::Roster::new(replayed(&fewer)));
    let msg = h
        .refused(
            &mut s,
            page_req(BIG, 100, &first.admission_ticket),
            ErrorCode::AdmissionRequired,
        )
        .await;
    assert!(msg.contains("device list changed"), "{msg}");
}

#[tokio::test]
async fn a_first_page_without_registered_devices_is_no_error_when_more_pages_follow() {
    let devices = big_post(120);
    let mut h = Harness::with_devices(&devices).await;
    // Only the last 20 have registered.
    upload(&h, &devices[100..], 1).await;
    let mut s = h.session().await;
    let first = page(&mut h, &mut s, page_req(BIG, 0, &[])).await;
    assert!(first.bundles.is_empty());
    assert_eq!(first.next_offset, 100);
    let second = page(&mut h, &mut s, page_req(BIG, 100, &first.admission_ticket)).await;
    assert_eq!(second.bundles.len(), 20);
    // The only page of a post where nobody registered is still refused, with no ticket.
    let mut lone = SessionState::new();
    h.hello(&mut lone).await;
    h.refused(&mut lone, bundles_req("emb-xx"), ErrorCode::NoDevices)
        .await;
}
