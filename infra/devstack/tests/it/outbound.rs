//! The SSRF-guarded client against real servers on loopback. Private, link-local and metadata
//! addresses are refused before any packet is sent, so these tests only ever connect to 127.0.0.1.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hub::support::outbound::{OutboundClient, OutboundError, OutboundPolicy, read_capped};

use crate::common::{Reply, server};

fn ok(_: &str) -> Reply {
    (200, None, b"ok".to_vec())
}

fn local_policy() -> OutboundPolicy {
    OutboundPolicy {
        allow_plain_http: true,
        allow_loopback: true,
        timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

async fn fetch(client: &OutboundClient, url: &str) -> Result<reqwest::Response, OutboundError> {
    Ok(client.get(url)?.send().await?)
}

#[tokio::test]
async fn loopback_is_refused_unless_explicitly_allowed() {
    let (addr, hits) = server(ok).await;
    let strict = OutboundClient::new(OutboundPolicy { allow_plain_http: true, ..Default::default() }).unwrap();
    for url in [
        format!("http://{addr}/"),
        format!("http://localhost:{}/", addr.port()),
        format!("http://[::1]:{}/", addr.port()),
    ] {
        let err = fetch(&strict, &url).await.unwrap_err();
        assert!(err.is_refused(), "{url}: {err}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached the server");

    let local = OutboundClient::new(local_policy()).unwrap();
    let r = fetch(&local, &format!("http://{addr}/")).await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn private_link_local_and_metadata_addresses_are_refused_before_connecting() {
    // Even with loopback allowed, nothing else opens up.
    let client = OutboundClient::new(local_policy()).unwrap();
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
    ] {
        assert!(matches!(client.check_url(url), Err(OutboundError::ForbiddenAddress(_))), "{url}");
    }
    let prod = OutboundClient::new(OutboundPolicy::default()).unwrap();
    assert!(matches!(prod.check_url("http://example.com/"), Err(OutboundError::SchemeNotAllowed)));
    assert!(matches!(prod.check_url("https://user:pw@example.com/"), Err(OutboundError::CredentialsInUrl)));
}

#[tokio::test]
async fn redirects_to_forbidden_targets_are_refused() {
    fn to_metadata(_: &str) -> Reply {
        (302, Some("http://169.254.169.254/latest/meta-data/iam/".into()), vec![])
    }
    fn to_private(_: &str) -> Reply {
        (301, Some("http://10.1.2.3/internal".into()), vec![])
    }
    fn to_https_metadata(_: &str) -> Reply {
        (307, Some("https://[::ffff:169.254.169.254]/".into()), vec![])
    }
    let client = OutboundClient::new(local_policy()).unwrap();
    for respond in [to_metadata, to_private, to_https_metadata] {
        let (addr, hits) = server(respond).await;
        let err = fetch(&client, &format!("http://{addr}/start")).await.unwrap_err();
        assert!(err.is_refused(), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn redirects_leave_the_allow_list_only_to_be_refused() {
    let (target, target_hits) = server(ok).await;
    let (start, _) = server(ok).await;
    let policy = OutboundPolicy { allowed_hosts: Some(vec!["127.0.0.1".into()]), ..local_policy() };
    let client = OutboundClient::new(policy).unwrap();
    // Allowed host, followed.
    assert_eq!(fetch(&client, &format!("http://{start}/")).await.unwrap().status(), 200);
    // `localhost` is loopback too, but not on the list: refused without connecting.
    let err = fetch(&client, &format!("http://localhost:{}/", target.port())).await.unwrap_err();
    assert!(matches!(err, OutboundError::HostNotAllowed(_)), "{err}");
    assert_eq!(target_hits.load(Ordering::SeqCst), 0);

    // A redirect off the list is refused mid-flight.
    static TARGET_PORT: AtomicUsize = AtomicUsize::new(0);
    TARGET_PORT.store(target.port() as usize, Ordering::SeqCst);
    fn off_list(_: &str) -> Reply {
        (302, Some(format!("http://localhost:{}/", TARGET_PORT.load(Ordering::SeqCst))), vec![])
    }
    let (redirector, _) = server(off_list).await;
    let err = fetch(&client, &format!("http://{redirector}/")).await.unwrap_err();
    assert!(err.is_refused(), "{err}");
    assert_eq!(target_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn bodies_and_time_are_capped() {
    fn big(_: &str) -> Reply {
        (200, None, vec![b'x'; 2 * 1024 * 1024])
    }
    fn slow(_: &str) -> Reply {
        (599, None, vec![])
    }
    let (addr, _) = server(big).await;
    let client = OutboundClient::new(local_policy()).unwrap();
    let r = fetch(&client, &format!("http://{addr}/")).await.unwrap();
    assert!(matches!(read_capped(r, 1024 * 1024).await, Err(OutboundError::TooLarge(_))));
    let r = fetch(&client, &format!("http://{addr}/")).await.unwrap();
    assert_eq!(read_capped(r, 4 * 1024 * 1024).await.unwrap().len(), 2 * 1024 * 1024);

    let (addr, _) = server(slow).await;
    let quick = OutboundClient::new(OutboundPolicy { timeout: Duration::from_millis(300), ..local_policy() }).unwrap();
    let err = fetch(&quick, &format!("http://{addr}/")).await.unwrap_err();
    assert!(!err.is_refused() && matches!(&err, OutboundError::Http(e) if e.is_timeout()), "{err}");
}
