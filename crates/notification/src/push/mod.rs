//! Web Push: subscriptions (one per session of an access token), the server's VAPID key, and
//! the checks that keep a push endpoint from being a way into the private network. Delivery is
//! in [`deliver`].

pub mod deliver;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// The alert names Mastodon clients send in `data[alerts]`.
pub use agora_client::PUSH_ALERTS as ALERTS;

/// Whose notifications are pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    All,
    /// Only from accounts the recipient follows.
    Followed,
    /// Only from accounts that follow the recipient.
    Follower,
    None,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::All => "all",
            Policy::Followed => "followed",
            Policy::Follower => "follower",
            Policy::None => "none",
        }
    }

    /// Empty means `all`; anything else unknown is refused.
    pub fn parse(s: &str) -> Option<Policy> {
        match s.trim() {
            "" | "all" => Some(Policy::All),
            "followed" => Some(Policy::Followed),
            "follower" => Some(Policy::Follower),
            "none" => Some(Policy::None),
            _ => None,
        }
    }
}

/// One session's push subscription.
#[derive(Clone, PartialEq, Eq)]
pub struct PushSubscription {
    pub id: i64,
    pub account_id: i64,
    pub session_id: i64,
    pub endpoint: String,
    /// The client's public key and auth secret, base64url without padding.
    pub p256dh: String,
    pub auth: String,
    /// aes128gcm (RFC 8291) when true, the legacy aesgcm otherwise.
    pub standard: bool,
    /// The enabled alert names, sorted.
    pub alerts: Vec<String>,
    pub policy: Policy,
    /// The token the subscription was made with: pushed to the client, as Mastodon does, and
    /// checked before each push (a revoked or expired one ends the subscription).
    pub access_token: String,
    /// The VAPID public key it was made with; a rotated key ends it.
    pub server_key: String,
    pub created_at_ms: i64,
}

impl std::fmt::Debug for PushSubscription {
    // The token and the client's keys are secrets: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSubscription")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("session_id", &self.session_id)
            .field("endpoint", &"[redacted]")
            .field("standard", &self.standard)
            .field("alerts", &self.alerts)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl PushSubscription {
    pub fn alerts_text(&self) -> String {
        self.alerts.join(",")
    }

    pub fn alerts_from_text(text: &str) -> Vec<String> {
        normalize_alerts(text.split(',').map(str::to_owned))
    }

    pub fn wants(&self, kind: &str) -> bool {
        self.alerts.iter().any(|a| a == kind)
    }
}

/// Known alert names only, sorted and unique.
pub fn normalize_alerts(alerts: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> =
        alerts.into_iter().map(|a| a.trim().to_owned()).filter(|a| ALERTS.contains(&a.as_str())).collect();
    out.sort();
    out.dedup();
    out
}

/// The server's VAPID key pair (P-256), base64url without padding: the private scalar and the
/// uncompressed public point.
#[derive(Clone, PartialEq, Eq)]
pub struct VapidKey {
    pub private_key: String,
    pub public_key: String,
    pub created_at_ms: i64,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey").field("public_key", &self.public_key).finish_non_exhaustive()
    }
}

impl VapidKey {
    /// A new key pair.
    pub fn generate(now_ms: i64) -> Result<Self, String> {
        let (pair, _) = ece::generate_keypair_and_auth_secret().map_err(|e| e.to_string())?;
        let parts = pair.raw_components().map_err(|e| e.to_string())?;
        Ok(VapidKey {
            private_key: URL_SAFE_NO_PAD.encode(parts.private_key()),
            public_key: URL_SAFE_NO_PAD.encode(parts.public_key()),
            created_at_ms: now_ms,
        })
    }
}

/// Base64 in either alphabet, padded or not (clients send all four).
pub fn decode_base64(raw: &str) -> Option<Vec<u8>> {
    let trimmed = raw.trim().trim_end_matches('=');
    URL_SAFE_NO_PAD.decode(trimmed).or_else(|_| STANDARD_NO_PAD.decode(trimmed)).ok()
}

/// The client's keys checked and re-encoded as base64url: `p256dh` an uncompressed P-256 point
/// (65 bytes, 0x04 first), `auth` 16 bytes.
pub fn normalize_keys(p256dh: &str, auth: &str) -> Result<(String, String), String> {
    let key = decode_base64(p256dh).ok_or("subscription[keys][p256dh] is not base64")?;
    if key.len() != 65 || key[0] != 4 {
        return Err("subscription[keys][p256dh] must be an uncompressed P-256 public key (65 bytes)".into());
    }
    let secret = decode_base64(auth).ok_or("subscription[keys][auth] is not base64")?;
    if secret.len() != 16 {
        return Err("subscription[keys][auth] must be 16 bytes".into());
    }
    Ok((URL_SAFE_NO_PAD.encode(key), URL_SAFE_NO_PAD.encode(secret)))
}

/// An address a push may go to: not loopback, private, link-local, shared (CGNAT), multicast,
/// unspecified, documentation or otherwise reserved, in IPv4 or IPv6 (IPv4-mapped included).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (RFC 6598)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64
}

/// The endpoint parsed and checked: an absolute https URL with a host and no credentials,
/// whose host resolves only to public addresses — unless `allow_private` (tests, a push
/// service on a private network), which also admits http.
pub async fn check_endpoint(endpoint: &str, allow_private: bool) -> Result<url::Url, String> {
    if endpoint.len() > 2048 {
        return Err("subscription[endpoint] is longer than 2048 characters".into());
    }
    let url = url::Url::parse(endpoint.trim()).map_err(|_| "subscription[endpoint] is not a URL".to_owned())?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => return Err("subscription[endpoint] must be an https URL".into()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("subscription[endpoint] must not carry credentials".into());
    }
    let host = url.host_str().ok_or("subscription[endpoint] has no host")?.to_owned();
    if allow_private {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs = resolve(&host, port).await.map_err(|e| format!("subscription[endpoint] does not resolve: {e}"))?;
    if addrs.is_empty() || addrs.iter().any(|ip| !is_public(*ip)) {
        return Err("subscription[endpoint] must not point at a private, loopback or link-local address".into());
    }
    Ok(url)
}

async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    Ok(tokio::net::lookup_host((bare, port)).await?.map(|a| a.ip()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_reserved_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn endpoints_must_be_https_on_public_hosts() {
        for bad in [
            "http://push.example.com/x",
            "ftp://1.1.1.1/x",
            "https://127.0.0.1/x",
            "https://[::1]:8443/x",
            "https://10.0.0.8/x",
            "https://169.254.169.254/latest/meta-data",
            "https://user:pw@1.1.1.1/x",
            "https://localhost/x",
            "not a url",
        ] {
            assert!(check_endpoint(bad, false).await.is_err(), "{bad}");
        }
        assert!(check_endpoint("https://1.1.1.1/push/abc", false).await.is_ok());
        // Allowed explicitly (the tests' local receiver): http and loopback pass.
        assert!(check_endpoint("http://127.0.0.1:9/x", true).await.is_ok());
        assert!(check_endpoint("ftp://127.0.0.1/x", true).await.is_err());
    }

    #[test]
    fn keys_are_checked_and_any_base64_is_taken() {
        let (pair, auth) = ece::generate_keypair_and_auth_secret().unwrap();
        let public = pair.raw_components().unwrap().public_key().to_vec();
        let padded = base64::engine::general_purpose::STANDARD.encode(&public);
        let auth_padded = base64::engine::general_purpose::STANDARD.encode(auth);
        let (p, a) = normalize_keys(&padded, &auth_padded).unwrap();
        assert_eq!(decode_base64(&p).unwrap(), public);
        assert_eq!(decode_base64(&a).unwrap(), auth);
        assert!(normalize_keys("!!", &a).is_err());
        assert!(normalize_keys(&URL_SAFE_NO_PAD.encode([4u8; 33]), &a).is_err(), "compressed points are refused");
        assert!(normalize_keys(&p, &URL_SAFE_NO_PAD.encode([1u8; 8])).is_err());
    }

    #[test]
    fn alerts_keep_known_names_and_secrets_stay_out_of_debug() {
        let alerts = normalize_alerts(["mention".into(), "nonsense".into(), "follow".into(), "mention".into()]);
        assert_eq!(alerts, ["follow", "mention"]);
        let s = PushSubscription {
            id: 1,
            account_id: 2,
            session_id: 3,
            endpoint: "https://push.example/secret-path".into(),
            p256dh: "key".into(),
            auth: "auth-secret".into(),
            standard: true,
            alerts,
            policy: Policy::All,
            access_token: "the-token".into(),
            server_key: "k".into(),
            created_at_ms: 0,
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("the-token") && !shown.contains("auth-secret") && !shown.contains("secret-path"));
        let key = VapidKey::generate(0).unwrap();
        assert!(!format!("{key:?}").contains(&key.private_key));
    }
}
