//! Paged bundle fetches: the first page stores its paid admission ticket with the next page it
//! may fetch; each later page checks and moves that on, in the transaction that takes its
//! bundles.

use super::prekeys::take_bundles;
use super::{to_i64, to_u32};
use crate::store::{BundlePage, PageRefused, StoreError, TakenBundle};
use rusqlite::{Connection, OptionalExtension, params};

/// The next-page column's value for `next_offset`.
fn next_page(next_offset: Option<u32>) -> Option<i64> {
    next_offset.map(i64::from)
}

pub(in crate::store::sqlite) fn take_first_bundle_page(
    conn: &Connection,
    hash: &[u8; 32],
    expires_hour: u64,
    page: &BundlePage,
) -> Result<Vec<TakenBundle>, StoreError> {
    let bundles = take_bundles(conn, &page.devices)?;
    if bundles.is_empty() && page.next_offset.is_none() {
        // The post's only page: no device has keys. The writer rolls the job back.
        return Err(StoreError::NoDevices);
    }
    let more = page.next_offset.is_some();
    conn.prepare_cached(
        "INSERT INTO admission_tickets (hash, post_id, kind, expires_hour, next_page, roster_digest)
         VALUES (?1, ?2, 'paid', ?3, ?4, ?5)",
    )?
    .execute(params![
        &hash[..],
        page.post,
        to_i64(expires_hour, "hour")?,
        next_page(page.next_offset),
        more.then_some(&page.roster[..]),
    ])?;
    Ok(bundles)
}

pub(in crate::store::sqlite) fn take_next_bundle_page(
    conn: &Connection,
    hash: &[u8; 32],
    now_hour: u64,
    page: &BundlePage,
) -> Result<Vec<TakenBundle>, StoreError> {
    let refused = |why| Err(StoreError::PageRefused(why));
    let row = conn
        .prepare_cached(
            "SELECT post_id, expires_hour, next_page, roster_digest FROM admission_tickets
             WHERE hash = ?1",
        )?
        .query_row([&hash[..]], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?,
            ))
        })
        .optional()?;
    let Some((post, expires_hour, next, roster)) = row else {
        return refused(PageRefused::Unknown);
    };
    if expires_hour <= to_i64(now_hour, "hour")? {
        return refused(PageRefused::Unknown);
    }
    if post != page.post {
        return refused(PageRefused::OtherPost);
    }
    let Some(next) = next else {
        return refused(PageRefused::NoPage);
    };
    if roster.as_deref() != Some(&page.roster[..]) {
        return refused(PageRefused::RosterChanged);
    }
    let next = to_u32(next, "next page")?;
    if next != page.offset {
        return refused(PageRefused::OutOfOrder { next });
    }
    let bundles = take_bundles(conn, &page.devices)?;
    conn.prepare_cached("UPDATE admission_tickets SET next_page = ?2 WHERE hash = ?1")?
        .execute(params![&hash[..], next_page(page.next_offset)])?;
    Ok(bundles)
}
