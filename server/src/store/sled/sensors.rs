//! Sensors in sled: what is known of each (acknowledged sequence, last stream, last seen),
//! the health counters it last reported, and the sensor-blind incidents both raise.
//!
//! Trees: `sensors` (node name → JSON [`SensorRecord`]), `sensor_health` (node → JSON
//! [`HealthRecord`]).

use super::{abort, dec, enc, tx_err, Store};
use crate::store::{HealthRecord, HealthReport, Result, SensorRecord, SensorStore};
use procguard_core::incident::Incident;
use sled::Transactional;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

#[tonic::async_trait]
impl SensorStore for Store {
    /// What the server knows of a sensor.
    fn sensor(&self, node: &str) -> Result<SensorRecord> {
        match self.sensors.get(node)? {
            Some(v) => dec("sensors", &v),
            None => Ok(SensorRecord::default()),
        }
    }

    fn sensor_known(&self, node: &str) -> Result<bool> {
        Ok(self.sensors.contains_key(node)?)
    }

    fn sensors_known(&self) -> u64 {
        self.sensor_count.load(Ordering::Relaxed)
    }

    /// Records a sensor's hello.
    async fn sensor_hello(&self, node: &str, boot_id: &str, version: &str) -> Result<SensorRecord> {
        let _w = self.writer.lock().await;
        let mut rec = self.sensor(node)?;
        rec.boot_id = boot_id.to_string();
        rec.version = version.to_string();
        rec.last_seen = Some(SystemTime::now());
        if self.sensors.insert(node, enc(&rec))?.is_none() {
            self.sensor_count.fetch_add(1, Ordering::Relaxed);
        }
        self.db.flush_async().await?;
        Ok(rec)
    }

    /// Records a sensor's health report. Events lost since its previous report (execs without
    /// an event, and events the kernel never delivered), at least `--sensor-blind-losses` of
    /// them, raise (or extend: one incident per episode, until a person resolves it) its
    /// sensor-blind incident, which is returned. Partial events are
    /// not blindness: the sensor saw the exec and said what it could not read; they are
    /// coverage (counted per baseline and in metrics), never this incident.
    async fn sensor_health(
        &self,
        node: &str,
        report: HealthReport,
        now: SystemTime,
    ) -> Result<Option<Incident>> {
        let w = self.writer.lock().await;
        let trees = (
            &self.log.health,
            &self.sensors,
            &self.log.incidents,
            &self.log.incident_keys,
            &self.log.records,
        );
        let (changed, mut appender) = trees
            .transaction(|(health, sensors, incidents, keys, records)| {
                let mut log = self.log.appender(now);
                let mut h: HealthRecord = match health.get(node)? {
                    Some(v) => dec("sensor_health", &v).map_err(abort)?,
                    None => HealthRecord::default(),
                };
                // Counters are cumulative since the sensor started; a smaller value means it
                // restarted, and the whole value is new.
                let delta = |new: u64, old: u64| if new >= old { new - old } else { new };
                let (d, k) = (
                    delta(report.dropped, h.dropped),
                    delta(report.kernel_losses, h.kernel_losses),
                );
                h.dropped = report.dropped;
                h.partial = report.partial;
                h.kernel_losses = report.kernel_losses;
                // A stopped capture sees nothing at all: raised once per stop (a restarted
                // sensor that stops again is a new stop).
                let newly_stopped = report.capture_stopped.is_some()
                    && report.capture_stopped != h.capture_stopped;
                h.capture_stopped = report.capture_stopped.clone();
                health.insert(node, enc(&h))?;
                let mut s: SensorRecord = match sensors.get(node)? {
                    Some(v) => dec("sensors", &v).map_err(abort)?,
                    None => SensorRecord::default(),
                };
                s.last_seen = Some(now);
                sensors.insert(node, enc(&s))?;
                if d + k >= self.blind_losses {
                    let reason = format!(
                        "sensor on {node} lost events since its previous report: {d} execs without an event (processing queue or spool full, or gone before they could be read), {k} never delivered by the kernel (overruns, sequence gaps, full ring buffer)"
                    );
                    log.blind((incidents, keys), node, reason)?;
                }
                if newly_stopped {
                    let why = report.capture_stopped.as_deref().unwrap_or_default();
                    let reason = format!(
                        "sensor on {node} stopped capturing ({why}): no process start on the node is seen until the sensor restarts"
                    );
                    log.blind((incidents, keys), node, reason)?;
                }
                let changed = log.finish(incidents, records)?;
                Ok((changed, log))
            })
            .map_err(tx_err)?;
        let gen = self.log.committed(Some(&mut appender));
        drop(w);
        if !changed.is_empty() {
            self.log.wait_durable(&self.db, gen).await?;
        }
        Ok(changed.into_iter().next())
    }

    /// Raises a sensor-blind incident for every sensor silent for longer than `silence`
    /// (counting from `since` at the earliest, the server's start, so a server restart does
    /// not flag every sensor). Each silence is flagged once. Returns the incidents.
    async fn silent_sensors(
        &self,
        silence: Duration,
        since: SystemTime,
        now: SystemTime,
    ) -> Result<Vec<Incident>> {
        let mut silent = Vec::new();
        for kv in self.sensors.iter() {
            let (k, v) = kv?;
            let rec: SensorRecord = dec("sensors", &v)?;
            let Some(last) = rec.last_seen else { continue };
            let from = last.max(since);
            if now.duration_since(from).unwrap_or_default() > silence {
                silent.push((String::from_utf8_lossy(&k).into_owned(), last));
            }
        }
        let mut out = Vec::new();
        for (node, last) in silent {
            let w = self.writer.lock().await;
            let trees = (
                &self.log.health,
                &self.sensors,
                &self.log.incidents,
                &self.log.incident_keys,
                &self.log.records,
            );
            let (changed, mut appender) = trees
                .transaction(|(health, sensors, incidents, keys, records)| {
                    let mut log = self.log.appender(now);
                    let mut h: HealthRecord = match health.get(&node)? {
                        Some(v) => dec("sensor_health", &v).map_err(abort)?,
                        None => HealthRecord::default(),
                    };
                    let current: Option<SensorRecord> = match sensors.get(&node)? {
                        Some(v) => Some(dec("sensors", &v).map_err(abort)?),
                        None => None,
                    };
                    // Re-checked inside the transaction: the sensor may have reported since.
                    if h.silence_flagged == Some(last)
                        || current.and_then(|c| c.last_seen) != Some(last)
                    {
                        return Ok((vec![], log));
                    }
                    h.silence_flagged = Some(last);
                    health.insert(node.as_str(), enc(&h))?;
                    let secs = now.duration_since(last).unwrap_or_default().as_secs();
                    let reason = format!(
                        "sensor on {node} has not reported for {secs}s (limit {}s)",
                        silence.as_secs()
                    );
                    log.blind((incidents, keys), &node, reason)?;
                    let changed = log.finish(incidents, records)?;
                    Ok((changed, log))
                })
                .map_err(tx_err)?;
            let gen = self.log.committed(Some(&mut appender));
            drop(w);
            if !changed.is_empty() {
                self.log.wait_durable(&self.db, gen).await?;
            }
            out.extend(changed);
        }
        Ok(out)
    }
}
