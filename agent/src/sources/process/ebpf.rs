//! Exec capture by the eBPF program (`platform::linux::exec_bpf`): every record the kernel side
//! wrote becomes an event with the executable, command line and working directory as they were
//! at exec, however briefly the program ran. Records the ring buffer had no room for are counted
//! in the kernel and reported as a gap with that count, so nothing is lost silently.

use std::thread;
use std::time::Duration;

use invigilator_proto::limits;
use invigilator_proto::v1::{Event, ProcessSourceStats};

use super::{
    Details, EventTx, ProcessConfig, ReceiverGone, RunningMode, UserNames, gap_event, send,
};
use crate::platform::linux::exec_bpf::{
    ExecProbe, ExecRecord, ExecStats, Hook, Preflight, Unavailable,
};
use crate::platform::linux::procfs;

/// How long one wait for records lasts: also how often counters are read for drops.
const POLL: Duration = Duration::from_millis(100);

pub(super) struct EbpfSource {
    probe: ExecProbe,
    hostname: String,
    users: UserNames,
    /// Drops already reported as gaps.
    reported_drops: u64,
}

impl EbpfSource {
    pub(super) fn start(cfg: &ProcessConfig, hostname: String) -> Result<Self, Unavailable> {
        let preflight = Preflight::new(cfg.btf_path.clone(), cfg.lockdown_path.clone());
        let probe = ExecProbe::load(&preflight, cfg.ring_buffer_bytes)?;
        let hook = match probe.hook {
            Hook::BtfTracepoint => "tp_btf/sched_process_exec",
            Hook::Tracepoint => "tp/sched/sched_process_exec",
        };
        tracing::info!(
            hook,
            ring_buffer_bytes = cfg.ring_buffer_bytes,
            "process source: eBPF exec program"
        );
        // Programs that started before the probe: reported once, as the netlink source does.
        Ok(Self {
            probe,
            hostname,
            users: UserNames::default(),
            reported_drops: 0,
        })
    }

    pub(super) fn run(mut self, tx: &EventTx, status: &RunningMode) {
        if let Err(ReceiverGone) = self.serve(tx, status) {
            tracing::debug!("process source stopping: the event receiver is gone");
        }
    }

    fn serve(&mut self, tx: &EventTx, status: &RunningMode) -> Result<(), ReceiverGone> {
        loop {
            match self.probe.poll(POLL) {
                Ok(records) => {
                    for raw in records {
                        match ExecRecord::parse(&raw) {
                            Ok(record) => send(tx, self.event(record))?,
                            Err(err) => tracing::warn!(%err, "process source: exec record skipped"),
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "process source: exec ring buffer");
                    thread::sleep(POLL);
                }
            }
            match self.probe.stats() {
                Ok(stats) => {
                    status.set_stats(to_proto(stats));
                    self.account_drops(stats, tx)?;
                }
                Err(err) => tracing::debug!(%err, "process source: exec counters unreadable"),
            }
            if tx.is_closed() {
                return Err(ReceiverGone);
            }
        }
    }

    /// Drops since the last look become one gap event carrying their count.
    fn account_drops(&mut self, stats: ExecStats, tx: &EventTx) -> Result<(), ReceiverGone> {
        let lost = stats.dropped.saturating_sub(self.reported_drops);
        if lost == 0 {
            return Ok(());
        }
        tracing::warn!(lost, "process source: exec ring buffer full; records lost");
        let mut gap = gap_event(
            &self.hostname,
            format!(
                "exec ring buffer full: {lost} program start(s) lost (raise [process] \
                 ring_buffer_bytes)"
            ),
        );
        if let Some(invigilator_proto::v1::event::Kind::Gap(g)) = gap.kind.as_mut() {
            g.lost = lost;
        }
        send(tx, gap)?;
        self.reported_drops = stats.dropped;
        Ok(())
    }

    fn event(&mut self, r: ExecRecord) -> Event {
        let lossy = |raw: &[u8]| limits::lossy(raw, limits::PATH);
        let (exe, exe_cut) = r.exe.as_deref().map(lossy).unzip();
        let (cwd, cwd_cut) = r.cwd.as_deref().map(lossy).unzip();
        let (argv, argv_cut) = procfs::parse_cmdline(&r.argv).unzip();
        let argv_cut = argv_cut.unwrap_or(false) || r.argv_full > r.argv.len() as u64;
        let name = |raw: &[u8]| Some(limits::lossy(raw, limits::NAME).0).filter(|n| !n.is_empty());
        let details = Details {
            exe,
            argv,
            argv_bytes: argv_cut.then_some(r.argv_full),
            uid: Some(r.uid),
            ppid: Some(r.ppid),
            name: name(&r.comm),
            parent_name: name(&r.parent_comm),
            cwd,
            exe_file: r.exe.is_some().then_some((r.exe_inode, r.exe_dev)),
            login_uid: r.login_uid,
            session_id: r.session_id,
            gid: Some(r.gid),
        };
        let mut event = details.into_event(r.pid, "ebpf", &self.hostname, &mut self.users);
        let mut cut = |field: &str, was: bool| {
            let name = format!("process.{field}");
            if was && !event.truncated.contains(&name) {
                event.truncated.push(name);
            }
        };
        cut("exe", exe_cut == Some(true) || r.truncated.contains(&"exe"));
        cut("cwd", cwd_cut == Some(true) || r.truncated.contains(&"cwd"));
        cut("argv", argv_cut || r.truncated.contains(&"argv"));
        event
    }
}

fn to_proto(s: ExecStats) -> ProcessSourceStats {
    ProcessSourceStats {
        seen: s.seen,
        dropped: s.dropped,
        truncated: s.truncated,
    }
}
