//! What the access checks read from the settings (`superuserIPs`, `trustedProxy`), parsed
//! once per reading and kept for every request in an [`AccessCache`].

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::validate::parse_ip_or_net;
use super::{Settings, TrustedProxy};

/// What the access checks need from the settings, parsed once per reading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessSettings {
    /// The readable `superuserIPs` entries.
    superuser_nets: Vec<IpNet>,
    /// Whether `superuserIPs` restricts at all: set when it has entries, readable or not.
    restricted: bool,
    pub trusted_proxy: TrustedProxy,
}

impl AccessSettings {
    pub fn from_settings(s: &Settings) -> AccessSettings {
        let superuser_nets: Vec<IpNet> = s.superuser_ips.iter().filter_map(|ip| parse_ip_or_net(ip)).collect();
        if superuser_nets.len() < s.superuser_ips.len() {
            tracing::warn!(entries = ?s.superuser_ips, "superuserIPs has unreadable entries: they allow no address");
        }
        AccessSettings { superuser_nets, restricted: !s.superuser_ips.is_empty(), trusted_proxy: s.trusted_proxy.clone() }
    }

    /// Nothing readable: superusers are refused everywhere until the settings can be read.
    fn refusing_superusers() -> AccessSettings {
        AccessSettings { superuser_nets: Vec::new(), restricted: true, trusted_proxy: TrustedProxy::default() }
    }

    /// Whether a superuser may log in or call from `client` (`None`: an address not known).
    pub fn allows_superuser(&self, client: Option<IpAddr>) -> bool {
        if !self.restricted {
            return true;
        }
        let Some(ip) = client else { return false };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.superuser_nets.iter().any(|net| net.contains(&ip))
    }
}

/// How long the access settings are used before being read again. Our own changes replace
/// them at once; this bounds how long a change made to `data.db` some other way goes unseen.
const ACCESS_MAX_AGE: Duration = Duration::from_secs(5);

/// The access settings as last read, shared by every request: a login or a superuser's
/// request reads them from memory, not from SQLite.
#[derive(Debug, Default)]
pub struct AccessCache {
    current: Mutex<Option<(Instant, Arc<AccessSettings>)>>,
}

impl AccessCache {
    pub(crate) fn fresh(&self) -> Option<Arc<AccessSettings>> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().filter(|(at, _)| at.elapsed() < ACCESS_MAX_AGE).map(|(_, s)| s.clone())
    }

    /// The last reading, however old; with none, superusers are refused (fail closed).
    pub(crate) fn last_or_refusing(&self) -> Arc<AccessSettings> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().map_or_else(|| Arc::new(AccessSettings::refusing_superusers()), |(_, s)| s.clone())
    }

    pub(crate) fn set(&self, settings: &Settings) -> Arc<AccessSettings> {
        let access = Arc::new(AccessSettings::from_settings(settings));
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), access.clone()));
        access
    }
}

