//! URLs that came from outside: webhook subscription targets and Spark file URLs, through the real
//! SSRF guard `outbound::OutboundClient::check_url` under each policy the hub uses, and the
//! subscription target rules of `webhooks::subscriptions::check_target` before its DNS step (trim,
//! 1..=2048 bytes, the webhook client's `check_url`, no fragment; what is stored is the parsed URL's
//! text). With bit 0 of the mode byte, the rest is a JSON `NewSubscription` / `SubscriptionUpdate` body.
//!
//! Properties: nothing panics; an accepted URL is https (http only where the policy allows it),
//! carries no credentials, names no forbidden IP literal and no host outside an allow-list; a host
//! the URL parser keeps as a domain does not read as an IP address (a connector would skip the
//! guarded resolver for it); and the stored text passes the same check again, to the same URL.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use hub::support::outbound::{OutboundClient, OutboundPolicy, is_forbidden};
use hub::integrations::webhooks::subscriptions::{NewSubscription, SubscriptionUpdate};
use libfuzzer_sys::fuzz_target;
use url::Host;

/// The subscription target check's limit (`MAX_URL_LEN`).
const MAX_URL_LEN: usize = 2048;
const SPARK_STORAGE: [&str; 2] = ["files.spark.example", "storage.example.com"];

struct Guard {
    client: OutboundClient,
    policy: OutboundPolicy,
}

fn guards() -> &'static [Guard] {
    static GUARDS: OnceLock<Vec<Guard>> = OnceLock::new();
    GUARDS.get_or_init(|| {
        let stored =
            |policy: OutboundPolicy| Guard { client: OutboundClient::new(policy.clone()).expect("client"), policy };
        vec![
            // `Context::webhook_client` in prod: any public host, no redirects.
            stored(OutboundPolicy { max_redirects: 0, ..Default::default() }),
            // `Context::outbound(spark_storage_domains)`: Spark's file URLs.
            stored(OutboundPolicy {
                allowed_hosts: Some(SPARK_STORAGE.map(String::from).to_vec()),
                ..Default::default()
            }),
            // The local stage with loopback allowed.
            stored(OutboundPolicy { allow_plain_http: true, allow_loopback: true, ..Default::default() }),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 1 {
        if let Ok(new) = serde_json::from_slice::<NewSubscription>(rest) {
            subscription_target(&new.url);
        }
        if let Ok(update) = serde_json::from_slice::<SubscriptionUpdate>(rest)
            && let Some(url) = update.url
        {
            subscription_target(&url);
        }
        return;
    }
    let raw = String::from_utf8_lossy(rest);
    for guard in guards() {
        let checked = guard.client.check_url(&raw);
        hub_fuzz::trace(|| {
            format!(
                "{:?}: {:?}",
                guard.policy.allowed_hosts,
                checked.as_ref().map(|u| u.as_str()).map_err(|e| e.to_string())
            )
        });
        if let Ok(url) = checked {
            accepted(guard, &url);
        }
    }
    subscription_target(&raw);
});

/// `subscriptions::check_target` up to its DNS step, with the prod webhook client.
fn subscription_target(url: &str) {
    let url = url.trim();
    if url.is_empty() || url.len() > MAX_URL_LEN {
        return;
    }
    let guard = &guards()[0];
    let Ok(parsed) = guard.client.check_url(url) else { return };
    if parsed.fragment().is_some() {
        return;
    }
    accepted(guard, &parsed);
}

fn accepted(guard: &Guard, url: &url::Url) {
    let policy = &guard.policy;
    assert!(url.scheme() == "https" || (policy.allow_plain_http && url.scheme() == "http"), "scheme {url}");
    assert!(url.username().is_empty() && url.password().is_none(), "credentials in {url}");
    match url.host().expect("a checked URL has a host") {
        Host::Ipv4(ip) => assert!(!is_forbidden(IpAddr::V4(ip), policy.allow_loopback), "{url}"),
        Host::Ipv6(ip) => assert!(!is_forbidden(IpAddr::V6(ip), policy.allow_loopback), "{url}"),
        Host::Domain(name) => {
            let bare = name.trim_start_matches('[').trim_end_matches(']');
            assert!(bare.parse::<IpAddr>().is_err(), "domain {name:?} reads as an IP address in {url}");
        }
    }
    if let Some(allowed) = &policy.allowed_hosts {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        assert!(allowed.iter().any(|a| host == *a || host.ends_with(&format!(".{a}"))), "host {host} in {url}");
    }
    // What is stored (and sent to later) is this text: it must pass again, as the same URL.
    let again = guard.client.check_url(url.as_str()).unwrap_or_else(|e| panic!("{url} refused on re-check: {e}"));
    assert_eq!(&again, url, "re-parsing changed the URL");
}
