//! The device inventory's supervisor side: entry nodes' device reports
//! are merged into the record store as they arrive (one transaction per
//! report), and every period a pass finds silent log sources, decides
//! which active devices are within the licence's device limit, and sends
//! those standings down to the entry nodes through the [`Downlink`]
//! (only when they changed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use collector::metrics::Exposition;
use parsers::{DeviceLimits, DeviceReport};

use crate::control::Downlink;
use crate::store::Store;

/// What the inventory did, for `/metrics`.
#[derive(Debug, Default)]
pub struct InventoryStats {
    /// Device reports received.
    pub reports: AtomicU64,
    /// Device rows merged.
    pub merged: AtomicU64,
    /// Devices created.
    pub created: AtomicU64,
    /// New devices not kept (an org at its ceiling), as nodes and the store counted them.
    pub overflow: AtomicU64,
    /// Silent devices that reported again.
    pub returned: AtomicU64,
    /// Devices found silent.
    pub silenced: AtomicU64,
    /// Incidents raised (silence and the device limit).
    pub incidents: AtomicU64,
    /// Merges or passes that failed (a failed merge loses that report).
    pub errors: AtomicU64,
    /// Active devices, at the last pass.
    pub active: AtomicU64,
    /// Active devices beyond the licence's limit, at the last pass.
    pub beyond: AtomicU64,
    /// Silent devices, at the last pass.
    pub silent: AtomicU64,
}

impl InventoryStats {
    /// Writes the inventory's series; `limit` is the licence's device limit.
    pub fn render(&self, limit: Option<u64>, m: &mut Exposition) {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        m.gauge("vigil_devices_active", "Devices seen within devices.active_days and not retired.", n(&self.active));
        m.gauge("vigil_devices_limit", "The licence's device limit (0: unlimited).", limit.unwrap_or(0));
        m.gauge(
            "vigil_devices_beyond_limit",
            "Active devices first seen after the licence's device limit was reached.",
            n(&self.beyond),
        );
        m.gauge("vigil_devices_silent", "Devices silent past their reporting interval.", n(&self.silent));
        for (name, help, v) in [
            ("vigil_device_reports_total", "Device reports received from entry nodes.", n(&self.reports)),
            ("vigil_devices_merged_total", "Device rows merged into the inventory.", n(&self.merged)),
            ("vigil_devices_created_total", "Devices added to the inventory.", n(&self.created)),
            (
                "vigil_devices_inventory_overflow_total",
                "New devices not kept because their org reached devices.max_per_org.",
                n(&self.overflow),
            ),
            ("vigil_devices_returned_total", "Silent devices that reported again.", n(&self.returned)),
            ("vigil_devices_silenced_total", "Devices found silent.", n(&self.silenced)),
            ("vigil_device_incidents_total", "Incidents the inventory raised.", n(&self.incidents)),
            ("vigil_device_inventory_errors_total", "Merges or passes that failed.", n(&self.errors)),
        ] {
            m.add(name, "counter", help, [(String::new(), v)]);
        }
    }
}

/// Merges reports from `reports` as they come and runs a pass every
/// `every`, until `stop`; then merges what is queued and runs a last pass.
pub async fn run(
    store: Arc<Store>,
    mut reports: tokio::sync::mpsc::Receiver<DeviceReport>,
    downlink: Arc<dyn Downlink>,
    every: Duration,
    stats: Arc<InventoryStats>,
    published: Arc<Mutex<Option<DeviceLimits>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = stop.changed() => if changed.is_err() { break },
            report = reports.recv() => match report {
                Some(r) => merge(&store, &r, &stats).await,
                None => break,
            },
            _ = tick.tick() => pass(&store, downlink.as_ref(), &stats, &published).await,
        }
    }
    while let Ok(r) = reports.try_recv() {
        merge(&store, &r, &stats).await;
    }
    pass(&store, downlink.as_ref(), &stats, &published).await;
}

async fn merge(store: &Store, report: &DeviceReport, stats: &InventoryStats) {
    stats.reports.fetch_add(1, Ordering::Relaxed);
    match store.merge_devices(report).await {
        Ok(m) => {
            stats.merged.fetch_add(m.merged, Ordering::Relaxed);
            stats.created.fetch_add(m.created, Ordering::Relaxed);
            stats.overflow.fetch_add(m.overflow, Ordering::Relaxed);
            stats.returned.fetch_add(m.returned, Ordering::Relaxed);
        }
        Err(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("vigil: device report of {} not merged: {e}", report.node);
        }
    }
}

/// One inventory pass; publishes the limit's standings when they changed.
pub async fn pass(
    store: &Store,
    downlink: &dyn Downlink,
    stats: &InventoryStats,
    published: &Mutex<Option<DeviceLimits>>,
) {
    match store.sweep_devices().await {
        Ok(out) => {
            stats.silenced.fetch_add(out.newly_silent, Ordering::Relaxed);
            stats.incidents.fetch_add(out.incidents, Ordering::Relaxed);
            stats.active.store(out.active, Ordering::Relaxed);
            stats.beyond.store(out.beyond, Ordering::Relaxed);
            stats.silent.store(out.silent, Ordering::Relaxed);
            let mut limits = out.limits;
            let mut last = published.lock().unwrap_or_else(PoisonError::into_inner);
            let same = last.as_ref().is_some_and(|l| {
                (l.limit, l.enforce, &l.within, l.active)
                    == (limits.limit, limits.enforce, &limits.within, limits.active)
            });
            if !same {
                // Versions rise across restarts, like the org table's.
                let now = u64::try_from(store.now_ms()).unwrap_or(1).max(1);
                limits.version = last.as_ref().map_or(now, |l| now.max(l.version + 1));
                downlink.devices(&limits);
                *last = Some(limits);
            }
        }
        Err(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("vigil: device inventory pass failed (tried again next period): {e}");
        }
    }
}
