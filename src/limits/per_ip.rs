//! The per-client-IP connection cap (`limits.max_connections_per_ip`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open downstream connections per client IP. Fixed at start, like `max_connections`.
#[derive(Debug, Default)]
pub struct PerIp {
    /// 0: no cap.
    max: usize,
    /// A std Mutex: touched once when a connection opens and once when it closes.
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub struct IpGuard {
    owner: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    pub fn new(max: usize) -> PerIp {
        PerIp {
            max,
            open: Mutex::default(),
        }
    }

    /// Counts a new connection from `ip`; `None` when `ip` already has `max` open (the
    /// connection should then be closed at once). Always `Some` when there is no cap.
    pub fn open(self: &Arc<Self>, ip: IpAddr) -> Option<Option<IpGuard>> {
        if self.max == 0 {
            return Some(None);
        }
        let ip = ip.to_canonical();
        let mut open = self.open.lock().expect("poisoned");
        let n = open.entry(ip).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Some(IpGuard {
            owner: self.clone(),
            ip,
        }))
    }

    /// Open connections from `ip`.
    pub fn count(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().expect("poisoned");
        open.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().expect("poisoned");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_ip_separately() {
        let p = Arc::new(PerIp::new(2));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let g1 = p.open(a).unwrap();
        let _g2 = p.open(a).unwrap();
        assert!(p.open(a).is_none());
        assert!(p.open(b).is_some());
        drop(g1);
        assert_eq!(p.count(a), 1);
        assert!(p.open(a).is_some());
        let unlimited = Arc::new(PerIp::new(0));
        assert!((0..100).all(|_| unlimited.open(a).is_some()));
    }
}
