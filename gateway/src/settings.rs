//! The gateway's fixed settings: where browsers reach it and whom it believes. Read by every
//! layer, so it sits at the bottom with the other building blocks.

use crate::rate_limit::Rate;
use ipnet::IpNet;
use portcullis_core::Host;
use std::{net::IpAddr, time::Duration};

/// Fixed settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The auth host's name.
    pub auth_host: Host,
    /// The port browsers use (443 unless a local setup says otherwise).
    pub public_port: u16,
    pub sso_lifetime: Duration,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The per-client rate limit of the login endpoints.
    pub login_rate: Rate,
    pub access_log: AccessLogSettings,
}

/// Which requests the access log writes (`crate::access_log`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AccessLogSettings {
    pub enabled: bool,
    /// Share of allowed requests written, 0.0–1.0; refusals and server errors are always
    /// written.
    pub sample: f64,
}

impl Default for AccessLogSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            sample: 1.0,
        }
    }
}

impl Settings {
    /// `https://host[:port]`, the way browsers reach `host` through the gateway.
    pub fn origin(&self, host: &str) -> String {
        match self.public_port {
            443 => format!("https://{host}"),
            port => format!("https://{host}:{port}"),
        }
    }

    /// The issuer of every token: the auth host's origin.
    pub fn issuer(&self) -> String {
        self.origin(self.auth_host.as_str())
    }

    /// True when `ip` is a configured trusted proxy.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}
