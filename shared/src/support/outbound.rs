//! The HTTP client for every URL that came from outside (file downloads, webhook targets, JWKS).
//!
//! Guards, in order: the URL itself (scheme, no credentials, host allow-list, IP literals), every
//! DNS answer (no loopback, private, link-local, metadata or other special ranges: a name with any
//! such address is refused, which also defeats rebinding between check and connect, since reqwest
//! connects to exactly the addresses our resolver returned), every redirect hop (the same URL checks),
//! no proxies from the environment, time caps and, through [`read_capped`], a size cap.
//! Loopback is allowed only when the local stack asks for it explicitly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

#[derive(Clone, Debug)]
pub struct OutboundPolicy {
    /// Plain `http://` URLs (local stage only).
    pub allow_plain_http: bool,
    /// Loopback addresses (local stage only, by explicit configuration).
    pub allow_loopback: bool,
    /// Hosts (and their subdomains) that may be reached; `None` allows any public host.
    pub allowed_hosts: Option<Vec<String>>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Redirects followed (each hop checked); 0 returns a 3xx answer as it is.
    pub max_redirects: usize,
}

impl Default for OutboundPolicy {
    fn default() -> Self {
        Self {
            allow_plain_http: false,
            allow_loopback: false,
            allowed_hosts: None,
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            max_redirects: 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("invalid URL")]
    InvalidUrl,
    #[error("URL scheme not allowed (https required)")]
    SchemeNotAllowed,
    #[error("credentials in URLs are not allowed")]
    CredentialsInUrl,
    #[error("host {0} is not allowed")]
    HostNotAllowed(String),
    #[error("address {0} is not allowed")]
    ForbiddenAddress(IpAddr),
    #[error("host {0} does not resolve")]
    Unresolvable(String),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("request failed: {0}")]
    Http(reqwest::Error),
    #[error("TLS set-up failed: {0}")]
    Tls(String),
}

/// The URL is dropped: a URL that came from outside may carry credentials (presigned URLs), and
/// error texts reach callers and logs (DESIGN.md §6).
impl From<reqwest::Error> for OutboundError {
    fn from(e: reqwest::Error) -> Self {
        OutboundError::Http(e.without_url())
    }
}

impl OutboundError {
    /// Whether the failure is our guard refusing the target (as opposed to the target failing).
    pub fn is_refused(&self) -> bool {
        match self {
            OutboundError::Http(e) => {
                let mut source: Option<&dyn std::error::Error> = Some(e);
                while let Some(err) = source {
                    if let Some(own) = err.downcast_ref::<OutboundError>() {
                        return own.is_refused();
                    }
                    source = err.source();
                }
                false
            }
            OutboundError::TooLarge(_) | OutboundError::Unresolvable(_) | OutboundError::Tls(_) => false,
            _ => true,
        }
    }
}

/// A guarded client; requests can only be built from URLs that pass [`OutboundClient::check_url`].
#[derive(Clone)]
pub struct OutboundClient {
    client: reqwest::Client,
    policy: Arc<OutboundPolicy>,
}

impl OutboundClient {
    pub fn new(policy: OutboundPolicy) -> Result<Self, OutboundError> {
        let policy = Arc::new(policy);
        let redirect_policy = policy.clone();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(shared_tls()?)
            .no_proxy()
            .https_only(!policy.allow_plain_http)
            .timeout(policy.timeout)
            .connect_timeout(policy.connect_timeout)
            .dns_resolver(Arc::new(GuardedResolver { allow_loopback: policy.allow_loopback }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if redirect_policy.max_redirects == 0 {
                    return attempt.stop();
                }
                if attempt.previous().len() > redirect_policy.max_redirects {
                    return attempt.error("too many redirects");
                }
                match check_url(&redirect_policy, attempt.url().as_str()) {
                    Ok(_) => attempt.follow(),
                    Err(e) => attempt.error(e),
                }
            }))
            .build()?;
        Ok(Self { client, policy })
    }

    /// Checks a URL against the policy before any connection is made.
    pub fn check_url(&self, url: &str) -> Result<Url, OutboundError> {
        check_url(&self.policy, url)
    }

    pub fn get(&self, url: &str) -> Result<reqwest::RequestBuilder, OutboundError> {
        Ok(self.client.get(self.check_url(url)?))
    }

    pub fn post(&self, url: &str) -> Result<reqwest::RequestBuilder, OutboundError> {
        Ok(self.client.post(self.check_url(url)?))
    }

    /// Checks a URL and every address its host resolves to now, without connecting: for targets
    /// registered to be called later (each call is checked again, as DNS answers change).
    pub async fn check_target(&self, url: &str) -> Result<Url, OutboundError> {
        let url = self.check_url(url)?;
        if let Some(Host::Domain(name)) = url.host() {
            resolve_guarded(name, self.policy.allow_loopback).await?;
        }
        Ok(url)
    }
}

/// The TLS configuration of every outbound client: the platform's verifier and roots, made once per
/// instance. Each client building its own costs about 120 KB and 3 ms (measured by
/// `devstack bench-outbound-cache`), which a cache of hundreds of per-host clients multiplies.
fn shared_tls() -> Result<rustls::ClientConfig, OutboundError> {
    static TLS: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();
    if let Some(config) = TLS.get() {
        return Ok(config.clone());
    }
    // A failure is not kept: the next client tries again.
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_platform_verifier())
        .map_err(|e| OutboundError::Tls(e.to_string()))?
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TLS.get_or_init(|| config).clone())
}

fn check_url(policy: &OutboundPolicy, raw: &str) -> Result<Url, OutboundError> {
    let url = Url::parse(raw).map_err(|_| OutboundError::InvalidUrl)?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_plain_http => {}
        _ => return Err(OutboundError::SchemeNotAllowed),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(OutboundError::CredentialsInUrl);
    }
    let host = url.host().ok_or(OutboundError::InvalidUrl)?;
    let ip = match &host {
        Host::Ipv4(ip) => Some(IpAddr::V4(*ip)),
        Host::Ipv6(ip) => Some(IpAddr::V6(*ip)),
        Host::Domain(_) => None,
    };
    if let Some(ip) = ip
        && is_forbidden(ip, policy.allow_loopback)
    {
        return Err(OutboundError::ForbiddenAddress(ip));
    }
    if let Some(allowed) = &policy.allowed_hosts {
        let name = host.to_string().to_ascii_lowercase();
        let ok = allowed.iter().any(|a| {
            let a = a.trim().to_ascii_lowercase();
            name == a || name.ends_with(&format!(".{a}"))
        });
        if !ok {
            return Err(OutboundError::HostNotAllowed(name));
        }
    }
    Ok(url)
}

/// Resolves names and refuses any answer that contains a forbidden address.
struct GuardedResolver {
    allow_loopback: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = resolve_guarded(&host, allow_loopback).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Every address of `host`, refused as a whole when any of them is forbidden.
async fn resolve_guarded(host: &str, allow_loopback: bool) -> Result<Vec<SocketAddr>, OutboundError> {
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host((host, 0)).await.map_err(|_| OutboundError::Unresolvable(host.to_string()))?.collect();
    if let Some(bad) = addrs.iter().find(|a| is_forbidden(a.ip(), allow_loopback)) {
        return Err(OutboundError::ForbiddenAddress(bad.ip()));
    }
    Ok(addrs)
}

/// `host:port` of a URL (the port its scheme implies when none is written); empty when it has no
/// host. What a destination's circuit breaker is keyed by.
pub fn host_and_port(url: &str) -> String {
    Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0))))
        .unwrap_or_default()
}

/// Addresses an outbound request must never reach.
pub fn is_forbidden(ip: IpAddr, allow_loopback: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4, allow_loopback),
        IpAddr::V6(v6) => forbidden_v6(v6, allow_loopback),
    }
}

fn forbidden_v4(ip: Ipv4Addr, allow_loopback: bool) -> bool {
    if ip.is_loopback() {
        return !allow_loopback;
    }
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, with the 169.254.169.254 metadata service
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (b & 0xc0) == 64) // shared address space 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18/15
        || a >= 240 // reserved
}

fn forbidden_v6(ip: Ipv6Addr, allow_loopback: bool) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4, allow_loopback);
    }
    if ip.is_loopback() {
        return !allow_loopback;
    }
    let seg = ip.segments();
    let embedded_v4 = || Ipv4Addr::new((seg[6] >> 8) as u8, seg[6] as u8, (seg[7] >> 8) as u8, seg[7] as u8);
    ip.is_unspecified()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (AWS metadata fd00:ec2::254)
        || (seg[0] & 0xffc0) == 0xfe80 // link-local
        || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[..6] == [0; 6]) // IPv4-compatible ::a.b.c.d
        || (seg[0] == 0x64 && seg[1] == 0xff9b && forbidden_v4(embedded_v4(), allow_loopback)) // NAT64
}

/// Reads a response body up to `max` bytes, failing as soon as it grows past that.
/// Whether an HTTP answer is worth another attempt later: a timeout, a rate limit, a server error.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

pub async fn read_capped(response: reqwest::Response, max: usize) -> Result<Vec<u8>, OutboundError> {
    if response.content_length().is_some_and(|len| len > max as u64) {
        return Err(OutboundError::TooLarge(max));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > max {
            return Err(OutboundError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first `max` bytes of a response body (for logs of what a receiver answered); the rest is
/// not read. A body that fails midway yields what arrived.
pub async fn read_prefix(response: reqwest::Response, max: usize) -> Vec<u8> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while body.len() < max {
        match stream.next().await {
            Some(Ok(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(max - body.len())]),
            _ => break,
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_ranges_are_forbidden() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            assert!(is_forbidden(ip(bad), false), "{bad} should be forbidden");
        }
        for good in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808"] {
            assert!(!is_forbidden(ip(good), false), "{good} should be allowed");
        }
    }

    #[test]
    fn loopback_needs_explicit_permission_and_nothing_else_is_unlocked() {
        assert!(!is_forbidden(ip("127.0.0.1"), true));
        assert!(!is_forbidden(ip("::1"), true));
        assert!(is_forbidden(ip("169.254.169.254"), true));
        assert!(is_forbidden(ip("10.0.0.1"), true));
    }

    #[test]
    fn urls_are_checked_before_connecting() {
        let strict = OutboundPolicy { allowed_hosts: Some(vec!["files.example.com".into()]), ..Default::default() };
        assert!(check_url(&strict, "https://files.example.com/a").is_ok());
        assert!(check_url(&strict, "https://cdn.files.example.com/a").is_ok());
        assert!(matches!(check_url(&strict, "https://evilfiles.example.com/a"), Err(OutboundError::HostNotAllowed(_))));
        assert!(matches!(check_url(&strict, "http://files.example.com/a"), Err(OutboundError::SchemeNotAllowed)));
        assert!(matches!(check_url(&strict, "https://u:p@files.example.com/"), Err(OutboundError::CredentialsInUrl)));
        assert!(matches!(check_url(&strict, "file:///etc/passwd"), Err(OutboundError::SchemeNotAllowed)));
        let open = OutboundPolicy::default();
        assert!(matches!(check_url(&open, "https://169.254.169.254/latest"), Err(OutboundError::ForbiddenAddress(_))));
        assert!(matches!(check_url(&open, "https://[::1]/"), Err(OutboundError::ForbiddenAddress(_))));
        assert!(matches!(check_url(&open, "https://0x7f000001/"), Err(OutboundError::ForbiddenAddress(_))));
    }

    proptest::proptest! {
        /// A webhook target or file URL is any text a caller sends: the check never panics, and what it
        /// accepts is https with a host and no credentials, never a forbidden IP literal.
        #[test]
        fn any_url_is_checked_without_panicking(url in "(https?|ftp|file)://[ -~]{0,80}|[ -~]{0,80}") {
            let client = OutboundClient::new(OutboundPolicy::default()).unwrap();
            if let Ok(parsed) = client.check_url(&url) {
                proptest::prop_assert_eq!(parsed.scheme(), "https");
                proptest::prop_assert!(parsed.username().is_empty() && parsed.password().is_none());
                if let Some(url::Host::Ipv4(v4)) = parsed.host() {
                    proptest::prop_assert!(!is_forbidden(IpAddr::V4(v4), false));
                }
                if let Some(url::Host::Ipv6(v6)) = parsed.host() {
                    proptest::prop_assert!(!is_forbidden(IpAddr::V6(v6), false));
                }
            }
        }
    }
}
