//! `lock = "lease"`: a `coordination.k8s.io/v1` Lease per environment in its own cluster, the
//! deploy lock of several hookops hosts (docs/ha.md). Taken, renewed and released through
//! kubectl, so it carries the users' own authentication; every change is a `kubectl replace`
//! of the object as last read, with its `resourceVersion`, which the API server refuses when
//! anyone changed it meanwhile (optimistic concurrency: two hosts never both win).
//!
//! The timings are client-go's leader election: a waiter takes a Lease over once it has seen
//! it unchanged for `lease_duration` by its own clock (no clock is compared with another
//! host's); the holder renews it every `lease_retry` on a background thread and gives it up
//! when it could not renew it for `lease_renew`. Between the two, `lease_duration -
//! lease_renew` is the margin that keeps a late holder and a new one apart. The `Fence` is
//! what the holder's cluster writes ask first (`kube::Gate`): time left until the renew
//! deadline, or "lease lost".

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::backends::kube::{Gate, Kubectl};
use crate::backends::process::{Deadline, Output};
use crate::config::LeaseSettings;

/// Annotations on the Lease: who holds it and what its attempt is doing, for the next holder
/// (a taker records the attempt of a holder that died) and for operators (`kubectl describe`).
pub const HOST: &str = "hookops.io/host";
pub const REPOSITORY: &str = "hookops.io/repository";
pub const ENV: &str = "hookops.io/env";
pub const ACTION: &str = "hookops.io/action";
pub const COMMIT: &str = "hookops.io/commit";
pub const REF: &str = "hookops.io/ref";
pub const TARGETS: &str = "hookops.io/targets";
pub const STARTED_AT: &str = "hookops.io/started-at";

/// Who asks for the Lease: host (config `[deploy] host`, else the machine's name), process
/// and repository.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub host: String,
    pub pid: u32,
    pub repository: String,
}

impl Identity {
    /// The Lease's `holderIdentity`.
    pub fn holder(&self) -> String {
        format!("{} pid {} {}", self.host, self.pid, self.repository)
    }
}

/// A Lease as read from the cluster.
#[derive(Debug, Clone)]
pub struct Observed {
    pub object: Value,
    pub resource_version: String,
    pub holder: Option<String>,
    pub acquire_time: Option<String>,
    pub renew_time: Option<String>,
    pub duration: Duration,
}

impl Observed {
    fn parse(object: Value) -> Result<Observed> {
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .context("a Lease without a resourceVersion")?
            .to_string();
        let spec = &object["spec"];
        let text = |k: &str| {
            spec[k]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(Observed {
            resource_version: rv,
            holder: text("holderIdentity"),
            acquire_time: text("acquireTime"),
            renew_time: text("renewTime"),
            duration: Duration::from_secs(spec["leaseDurationSeconds"].as_u64().unwrap_or(15)),
            object,
        })
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.object["metadata"]["annotations"][key]
            .as_str()
            .filter(|s| !s.is_empty())
    }

    /// Whether the holder is this repository on this host (another process of it, dead: the
    /// caller holds the repository's file lock).
    fn held_here(&self, me: &Identity) -> bool {
        self.annotation(HOST) == Some(me.host.as_str())
            && self.annotation(REPOSITORY) == Some(me.repository.as_str())
    }
}

/// What an attempt under the Lease is doing, written into its annotations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InFlight {
    pub env: String,
    pub action: String,
    pub commit: String,
    pub ref_name: String,
    pub targets: Vec<String>,
    pub started_at: String,
}

impl InFlight {
    fn annotations(&self) -> BTreeMap<&'static str, String> {
        let mut a = BTreeMap::new();
        if !self.commit.is_empty() {
            a.insert(ENV, self.env.clone());
            a.insert(ACTION, self.action.clone());
            a.insert(COMMIT, self.commit.clone());
            a.insert(REF, self.ref_name.clone());
            a.insert(TARGETS, self.targets.join(","));
            a.insert(STARTED_AT, self.started_at.clone());
        }
        a
    }

    /// The attempt a Lease's annotations describe (None when it names no commit).
    pub fn of(lease: &Observed) -> Option<InFlight> {
        let get = |k| lease.annotation(k).unwrap_or_default().to_string();
        let commit = get(COMMIT);
        (!commit.is_empty()).then(|| InFlight {
            env: get(ENV),
            action: get(ACTION),
            commit,
            ref_name: get(REF),
            targets: get(TARGETS)
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            started_at: get(STARTED_AT),
        })
    }
}

/// Why a cluster write was not started (or was stopped): the holder lost its Lease.
#[derive(Debug)]
pub struct LeaseLost(pub String);

impl std::fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lease lost: {}", self.0)
    }
}

impl std::error::Error for LeaseLost {}

struct FenceState {
    /// The renew deadline: last successful renewal (as sent) + `lease_renew`.
    valid_until: Instant,
    lost: Option<String>,
}

/// The holder's view of its Lease, shared by the renewing thread and every cluster write.
#[derive(Clone)]
pub struct Fence {
    state: Arc<Mutex<FenceState>>,
    /// A write with less time left than this is not started.
    margin: Duration,
}

impl Fence {
    fn new(valid_until: Instant, margin: Duration) -> Fence {
        Fence {
            state: Arc::new(Mutex::new(FenceState {
                valid_until,
                lost: None,
            })),
            margin,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FenceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the Lease is lost, once it is (for good: a lost Lease is never taken back by the
    /// same attempt).
    pub fn lost(&self) -> Option<String> {
        let mut s = self.lock();
        if s.lost.is_none() && Instant::now() >= s.valid_until {
            s.lost = Some("not renewed before its renew deadline".into());
        }
        s.lost.clone()
    }

    fn lose(&self, why: String) {
        let mut s = self.lock();
        if s.lost.is_none() {
            s.lost = Some(why);
        }
    }

    fn renewed(&self, valid_until: Instant) {
        let mut s = self.lock();
        if s.lost.is_none() && valid_until > s.valid_until {
            s.valid_until = valid_until;
        }
    }
}

impl Gate for Fence {
    fn permit(&self) -> Result<Duration> {
        if let Some(why) = self.lost() {
            return Err(LeaseLost(why).into());
        }
        let left = self
            .lock()
            .valid_until
            .saturating_duration_since(Instant::now());
        if left < self.margin {
            let why = format!(
                "{:.1}s left before its renew deadline, less than the {:.1}s a write needs",
                left.as_secs_f64(),
                self.margin.as_secs_f64()
            );
            return Err(LeaseLost(why).into());
        }
        Ok(left)
    }

    fn deadline(&self) -> Deadline {
        let fence = self.clone();
        Arc::new(move || {
            let s = fence.lock();
            s.lost.is_none().then_some(s.valid_until)
        })
    }

    fn lost(&self) -> Option<String> {
        Fence::lost(self)
    }
}

/// The Lease of one environment, through kubectl (never fenced itself).
#[derive(Clone)]
pub struct Client {
    kubectl: Kubectl,
    pub settings: LeaseSettings,
    pub me: Identity,
}

/// The current time as a Kubernetes MicroTime.
fn micro_now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn conflict(out: &Output) -> bool {
    out.stderr.contains("(Conflict)") || out.stderr.contains("(AlreadyExists)")
}

impl Client {
    pub fn new(mut kubectl: Kubectl, settings: LeaseSettings, me: Identity) -> Client {
        kubectl.gate = None;
        Client {
            kubectl,
            settings,
            me,
        }
    }

    fn timeout_arg(&self) -> String {
        format!(
            "--request-timeout={}ms",
            self.settings.retry.as_millis().max(500)
        )
    }

    /// The Lease, or None when there is none.
    pub fn get(&self) -> Result<Option<Observed>> {
        let s = &self.settings;
        let out = self.kubectl.raw([
            "get",
            "leases.coordination.k8s.io",
            &s.name,
            "--namespace",
            &s.namespace,
            "--ignore-not-found",
            "-o",
            "json",
            &self.timeout_arg(),
        ])?;
        if !out.success() {
            bail!("reading Lease {}/{}: {}", s.namespace, s.name, out.reason());
        }
        if out.stdout.trim().is_empty() {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(&out.stdout)
            .with_context(|| format!("Lease {}/{}: unreadable answer", s.namespace, s.name))?;
        Observed::parse(v).map(Some)
    }

    /// The Lease object this client writes: held by it (`holder`) or released, with the
    /// attempt's annotations, over `base` (the object as last read: its resourceVersion is what
    /// makes the write conditional).
    fn object(&self, base: Option<&Observed>, holder: bool, in_flight: &InFlight) -> Value {
        let s = &self.settings;
        let now = micro_now();
        let mut annotations: BTreeMap<&str, String> = BTreeMap::new();
        let mut spec = json!({});
        if holder {
            annotations.insert(HOST, self.me.host.clone());
            annotations.insert(REPOSITORY, self.me.repository.clone());
            annotations.extend(in_flight.annotations());
            let mine = base.is_some_and(|b| b.holder.as_deref() == Some(&self.me.holder()));
            let transitions = base
                .map(|b| b.object["spec"]["leaseTransitions"].as_i64().unwrap_or(0))
                .unwrap_or(0);
            spec = json!({
                "holderIdentity": self.me.holder(),
                "leaseDurationSeconds": s.duration.as_secs_f64().ceil().max(1.0) as i64,
                "acquireTime": if mine { base.and_then(|b| b.acquire_time.clone()).unwrap_or_else(|| now.clone()) } else { now.clone() },
                "renewTime": now,
                "leaseTransitions": if mine || base.is_none_or(|b| b.holder.is_none()) { transitions } else { transitions + 1 },
            });
        }
        let mut metadata = json!({
            "name": s.name,
            "namespace": s.namespace,
            "labels": {"app.kubernetes.io/managed-by": "hookops"},
            "annotations": annotations,
        });
        if let Some(b) = base {
            metadata["resourceVersion"] = json!(b.resource_version);
        }
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": spec,
        })
    }

    /// Creates (no `base`) or replaces the Lease; Ok(None) when someone else changed it first.
    fn write(&self, base: Option<&Observed>, object: Value) -> Result<Option<Observed>> {
        let s = &self.settings;
        let verb = if base.is_some() { "replace" } else { "create" };
        let out = self.kubectl.raw_stdin(
            [verb, "-f", "-", "-o", "json", &self.timeout_arg()],
            serde_json::to_vec(&object)?,
        )?;
        if out.success() {
            let v: Value = serde_json::from_str(&out.stdout)
                .with_context(|| format!("Lease {}/{}: unreadable answer", s.namespace, s.name))?;
            return Observed::parse(v).map(Some);
        }
        if conflict(&out) {
            return Ok(None);
        }
        bail!("{verb} Lease {}/{}: {}", s.namespace, s.name, out.reason())
    }
}

/// The Lease held by this process; renewed on a thread of its own until `release`.
pub struct Held {
    client: Client,
    fence: Fence,
    last: Arc<Mutex<Observed>>,
    in_flight: Arc<Mutex<InFlight>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    /// The Lease as it was when taken over from another host's holder that stopped renewing
    /// it (its annotations name the attempt that died, if one was in flight).
    pub taken_from: Option<Observed>,
}

impl Held {
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Writes the attempt now in flight into the Lease's annotations.
    pub fn set_in_flight(&self, in_flight: InFlight) -> Result<()> {
        if let Some(why) = self.fence.lost() {
            return Err(LeaseLost(why).into());
        }
        *self.in_flight.lock().unwrap_or_else(|p| p.into_inner()) = in_flight;
        renew_once(&self.client, &self.fence, &self.last, &self.in_flight)
    }

    /// Stops renewing and gives the Lease up (holder cleared, so a waiter takes it at once);
    /// a Lease already lost is left alone.
    pub fn release(mut self) -> Result<()> {
        self.stop_renewing();
        if self.fence.lost().is_some() {
            return Ok(());
        }
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let released = self.client.object(Some(&last), false, &InFlight::default());
        match self.client.write(Some(&last), released)? {
            Some(_) => Ok(()),
            None => bail!(
                "releasing Lease {}/{}: someone else changed it",
                self.client.settings.namespace,
                self.client.settings.name
            ),
        }
    }

    fn stop_renewing(&mut self) {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stop_renewing();
    }
}

/// One renewal: a replace of the Lease as last written, holder and annotations unchanged.
fn renew_once(
    client: &Client,
    fence: &Fence,
    last: &Mutex<Observed>,
    in_flight: &Mutex<InFlight>,
) -> Result<()> {
    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(why) = fence.lost() {
        return Err(LeaseLost(why).into());
    }
    let sent = Instant::now();
    let what = in_flight.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let object = client.object(Some(&last), true, &what);
    match client.write(Some(&last), object)? {
        Some(now) => {
            *last = now;
            fence.renewed(sent + client.settings.renew);
            Ok(())
        }
        None => {
            let holder = client
                .get()
                .ok()
                .flatten()
                .and_then(|o| o.holder)
                .unwrap_or_else(|| "nobody".into());
            let why = format!("taken by {holder}");
            fence.lose(why.clone());
            Err(LeaseLost(why).into())
        }
    }
}

/// What `acquire` says while it waits, and whether to stop waiting.
pub trait Waiting {
    /// Printed once per holder: who holds the Lease and since when.
    fn held_by(&mut self, lease: &Observed);
    /// Asked before every try: Some(reason) gives up (the push was superseded).
    fn give_up(&mut self) -> Option<String>;
}

/// How `acquire` ended: held, or given up (the request was superseded while it waited: the
/// reason).
pub enum Acquired {
    Held(Box<Held>),
    GaveUp(String),
}

/// Takes the Lease, waiting (`retry` apart) while another live holder has it; a holder that
/// left it unchanged for its duration (by our clock) is taken over.
pub fn acquire(client: Client, in_flight: InFlight, waiting: &mut dyn Waiting) -> Result<Acquired> {
    let s = client.settings.clone();
    // (resourceVersion, when we first saw it): the Lease's age by our own clock.
    let mut seen: Option<(String, Instant)> = None;
    let mut told: Option<String> = None;
    loop {
        if let Some(why) = waiting.give_up() {
            return Ok(Acquired::GaveUp(why));
        }
        let current = client.get()?;
        let take = match &current {
            None => true,
            Some(o) if o.holder.is_none() || o.held_here(&client.me) => true,
            Some(o) => {
                let first = match &seen {
                    Some((rv, at)) if *rv == o.resource_version => *at,
                    _ => {
                        let now = Instant::now();
                        seen = Some((o.resource_version.clone(), now));
                        now
                    }
                };
                if first.elapsed() >= o.duration {
                    true
                } else {
                    if told.as_deref() != o.holder.as_deref() {
                        waiting.held_by(o);
                        told = o.holder.clone();
                    }
                    false
                }
            }
        };
        if take {
            let sent = Instant::now();
            let object = client.object(current.as_ref(), true, &in_flight);
            if let Some(now) = client.write(current.as_ref(), object)? {
                let taken_from = current.filter(|o| o.holder.is_some() && !o.held_here(&client.me));
                let held = start(client, now, in_flight, sent, taken_from);
                return Ok(Acquired::Held(Box::new(held)));
            }
            log::info!("Lease {}/{}: another host was faster", s.namespace, s.name);
            continue;
        }
        std::thread::sleep(s.retry);
    }
}

/// The Lease just written at `sent`: its fence and its renewing thread.
fn start(
    client: Client,
    now: Observed,
    in_flight: InFlight,
    sent: Instant,
    taken_from: Option<Observed>,
) -> Held {
    let fence = Fence::new(sent + client.settings.renew, client.settings.retry);
    let last = Arc::new(Mutex::new(now));
    let in_flight = Arc::new(Mutex::new(in_flight));
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let thread = {
        let (client, fence, last, in_flight, stop) = (
            client.clone(),
            fence.clone(),
            Arc::clone(&last),
            Arc::clone(&in_flight),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || renew_loop(&client, &fence, &last, &in_flight, &stop))
    };
    Held {
        client,
        fence,
        last,
        in_flight,
        stop,
        thread: Some(thread),
        taken_from,
    }
}

fn renew_loop(
    client: &Client,
    fence: &Fence,
    last: &Mutex<Observed>,
    in_flight: &Mutex<InFlight>,
    stop: &(Mutex<bool>, Condvar),
) {
    let (flag, wake) = stop;
    loop {
        {
            let guard = flag.lock().unwrap_or_else(|p| p.into_inner());
            let (guard, _) = wake
                .wait_timeout_while(guard, client.settings.retry, |stopped| !*stopped)
                .unwrap_or_else(|p| p.into_inner());
            if *guard {
                return;
            }
        }
        // A holder that was frozen past its renew deadline (SIGSTOP, a paused VM) must not
        // renew: another host may hold the Lease by now, or be about to.
        if fence.lost().is_some() {
            return;
        }
        match renew_once(client, fence, last, in_flight) {
            Ok(()) => {}
            Err(e) if e.downcast_ref::<LeaseLost>().is_some() => {
                log::warn!("{e:#}");
                return;
            }
            Err(e) => log::info!("renewing the Lease (will retry): {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_refuses_writes_near_the_deadline_and_after_a_loss() {
        let f = Fence::new(
            Instant::now() + Duration::from_secs(10),
            Duration::from_secs(2),
        );
        let left = f.permit().unwrap();
        assert!(left > Duration::from_secs(9), "{left:?}");
        assert!(Gate::deadline(&f)().is_some());

        let near = Fence::new(
            Instant::now() + Duration::from_secs(1),
            Duration::from_secs(2),
        );
        let e = near.permit().unwrap_err();
        assert!(e.downcast_ref::<LeaseLost>().is_some(), "{e:#}");
        assert!(e.to_string().contains("less than the 2.0s"), "{e:#}");

        f.lose("taken by b".into());
        assert!(f.permit().unwrap_err().to_string().contains("taken by b"));
        assert!(Gate::deadline(&f)().is_none(), "killed at once");
        // Never given back by a later renewal.
        f.renewed(Instant::now() + Duration::from_secs(60));
        assert!(f.permit().is_err());

        let expired = Fence::new(Instant::now(), Duration::ZERO);
        assert!(expired.lost().is_some());
    }

    #[test]
    fn in_flight_attempts_round_trip_through_annotations() {
        let flight = InFlight {
            env: "prod".into(),
            action: "deploy".into(),
            commit: "abc".into(),
            ref_name: "refs/heads/main".into(),
            targets: vec!["web".into(), "db".into()],
            started_at: "2026-01-01T00:00:00Z".into(),
        };
        let me = Identity {
            host: "a".into(),
            pid: 7,
            repository: "/srv/git/app.git".into(),
        };
        let kubectl = Kubectl::new(
            "kubectl",
            &crate::config::Environment::default_for("main"),
            std::path::Path::new("/nonexistent"),
            crate::backends::mask::Masker::default(),
        );
        let client = Client::new(
            kubectl,
            crate::config::Environment::default_for("main").lease(),
            me.clone(),
        );
        let mut object = client.object(None, true, &flight);
        object["metadata"]["resourceVersion"] = json!("5");
        let o = Observed::parse(object).unwrap();
        assert_eq!(InFlight::of(&o), Some(flight));
        assert_eq!(o.holder.as_deref(), Some("a pid 7 /srv/git/app.git"));
        assert!(o.held_here(&me));
        assert!(!o.held_here(&Identity {
            host: "b".into(),
            ..me.clone()
        }));
        assert_eq!(o.duration, Duration::from_secs(15));
        let released = client.object(Some(&o), false, &InFlight::default());
        let r = Observed::parse(released).unwrap();
        assert_eq!((r.holder.clone(), InFlight::of(&r)), (None, None));
        assert_eq!(r.resource_version, "5", "a conditional write");
    }
}
