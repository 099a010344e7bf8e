//! Page cursors of index listings. A cursor names the last item a page returned (its index sort key
//! and its table key); the index key is rebuilt from what the caller may read, so a cursor cannot
//! reach another organization's listing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{Item, s};

#[derive(Debug, thiserror::Error)]
#[error("invalid cursor")]
pub struct InvalidCursor;

/// The cursor after the item with this index sort key and table key.
pub fn encode(sort_key: &str, pk: &str, sk: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{sort_key}\n{pk}\n{sk}"))
}

/// The `ExclusiveStartKey` of `index` a cursor names; refuses (never panics on) anything [`encode`]
/// did not make for an item whose key starts with `pk_prefix` and whose sort key starts with a
/// 12-digit time.
pub fn decode(index: &str, cursor: &str, pk_prefix: &str) -> Result<Item, InvalidCursor> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| InvalidCursor)?;
    let text = String::from_utf8(raw).map_err(|_| InvalidCursor)?;
    let mut parts = text.splitn(3, '\n');
    let (Some(sort), Some(pk), Some(sk)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(InvalidCursor);
    };
    // Byte-wise checks: a cursor is any bytes a client sends, and must never panic a slice.
    let digits = sort.as_bytes().get(..12).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let bounded = [sort, pk, sk].iter().all(|part| !part.is_empty() && part.len() <= 400);
    if !pk.starts_with(pk_prefix) || !bounded || sort.len() < 13 || !digits {
        return Err(InvalidCursor);
    }
    Ok(Item::from([
        ("gsi1pk".into(), s(index)),
        ("gsi1sk".into(), s(sort)),
        ("pk".into(), s(pk)),
        ("sk".into(), s(sk)),
    ]))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::store::ItemExt;

    proptest! {
        /// A cursor is any string a client sends: decoding never panics, and what it accepts names an
        /// item of the caller's own index.
        #[test]
        fn any_cursor_decodes_or_is_refused(cursor in any::<String>()) {
            if let Ok(key) = decode("ORG#mine#DELIVERIES", &cursor, "DELIVERY#") {
                prop_assert_eq!(key.str("gsi1pk"), Some("ORG#mine#DELIVERIES"));
                prop_assert!(key.str("pk").unwrap().starts_with("DELIVERY#"));
            }
        }

        #[test]
        fn any_bytes_behind_base64_decode_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode("ORG#mine#DELIVERIES", &URL_SAFE_NO_PAD.encode(bytes), "DELIVERY#");
        }

        #[test]
        fn cursors_we_give_come_back(at in 0i64..999_999_999_999, id in "[a-z0-9]{1,40}") {
            let pk = format!("DELIVERY#{id}");
            let cursor = encode(&format!("{at:012}#{id}"), &pk, "DELIVERY");
            let key = decode("ORG#o#DELIVERIES", &cursor, "DELIVERY#").unwrap();
            prop_assert_eq!(key.str("pk"), Some(pk.as_str()));
            prop_assert_eq!(key.str("sk"), Some("DELIVERY"));
            prop_assert!(decode("ORG#o#DELIVERIES", &cursor, "PENDING#").is_err(), "another listing's cursor");
        }
    }
}
