//! The deflate level of each block of a large file, chosen by where the pipeline waits.
//! When the workers are behind (the writer waits for a block it was handed), the level
//! steps down, to stored deflate blocks at the bottom. When the writer is behind (the disk,
//! a slow upload: each block is done when its turn comes), the level steps back up towards
//! the configured one, but only while the blocks' measured costs say that the next level
//! would be faster overall: its compression on the workers against the output's speed for
//! its smaller blocks. On two cores level 1 deflates text at about 0.75 GB/s, below what a
//! disk writes (1.5 GB/s here): stepping up there would only slow the backup, while a slow
//! upload gains from it.
//!
//! Pure: the pipeline reports what it saw and what each block cost, and reads the level back.

use std::time::Duration;

/// Who was behind when the writer took a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Behind {
    /// The block was not done yet: compression is the bottleneck.
    Workers,
    /// The block was done and waiting: the output is the bottleneck.
    Writer,
    /// The writer waited for the reader: no level would help.
    Neither,
}

/// What one block of a deflated file cost.
#[derive(Debug, Clone, Copy)]
pub(super) struct BlockCost {
    /// The level the worker used.
    pub(super) level: u32,
    pub(super) input: u64,
    pub(super) output: u64,
    /// The worker's time on it.
    pub(super) compress: Duration,
    /// The writer's time to write it out.
    pub(super) write: Duration,
}

/// Consecutive blocks behind on the same side before the level moves by one: a few MiB,
/// so a phase of text after one of random data (or the reverse) is followed quickly, while
/// a single late block moves nothing.
const STEP_AFTER: i32 = 4;
/// A level up must promise this much more throughput: the estimates are noisy, and a wrong
/// step up costs more than it gains.
const STEP_UP_GAIN: f64 = 1.1;
/// Costs are averaged over about this many bytes of input (older ones fade out), so that
/// the estimates follow a change of disk speed or of data.
const COST_WINDOW: f64 = (64 << 20) as f64;
const LEVELS: usize = 10;

#[derive(Debug, Clone)]
pub(super) struct Pace {
    lowest: u32,
    highest: u32,
    level: u32,
    workers: u32,
    /// Negative: blocks in a row with the workers behind; positive: with the writer behind.
    run: i32,
    /// Per level: output bytes and compression time against input bytes.
    output: [Average; LEVELS],
    compress: [Average; LEVELS],
    /// The writer's time against output bytes, whatever the level.
    write: Average,
}

/// A ratio of two sums over a fading window of its denominator.
#[derive(Debug, Clone, Copy, Default)]
struct Average {
    num: f64,
    den: f64,
}

impl Average {
    fn add(&mut self, num: f64, den: f64) {
        self.num += num;
        self.den += den;
        if self.den > COST_WINDOW {
            self.num /= 2.0;
            self.den /= 2.0;
        }
    }

    fn get(&self) -> Option<f64> {
        (self.den > 0.0).then(|| self.num / self.den)
    }
}

impl Pace {
    /// Starts at `highest`; never leaves `lowest..=highest` (equal bounds: a fixed level).
    /// `workers`: how many blocks are compressed at once.
    pub(super) fn new(lowest: u32, highest: u32, workers: u32) -> Self {
        let highest = highest.min(LEVELS as u32 - 1);
        let lowest = lowest.min(highest);
        Self {
            lowest,
            highest,
            level: highest,
            workers: workers.max(1),
            run: 0,
            output: [Average::default(); LEVELS],
            compress: [Average::default(); LEVELS],
            write: Average::default(),
        }
    }

    pub(super) fn level(&self) -> u32 {
        self.level
    }

    /// Takes in where the last block waited and what it cost; returns the level for the
    /// next ones.
    pub(super) fn observe(&mut self, behind: Behind, cost: BlockCost) -> u32 {
        if cost.input > 0 && (cost.level as usize) < LEVELS {
            let (level, input) = (cost.level as usize, cost.input as f64);
            self.output[level].add(cost.output as f64, input);
            self.compress[level].add(cost.compress.as_nanos() as f64, input);
            self.write.add(cost.write.as_nanos() as f64, cost.output as f64);
        }
        match behind {
            Behind::Workers => self.run = self.run.min(0) - 1,
            Behind::Writer => self.run = self.run.max(0) + 1,
            Behind::Neither => {}
        }
        if self.run <= -STEP_AFTER {
            self.level = self.level.saturating_sub(1).max(self.lowest);
            self.run = 0;
        } else if self.run >= STEP_AFTER {
            if self.level < self.highest && self.step_up_pays() {
                self.level += 1;
            }
            self.run = 0;
        }
        self.level
    }

    /// Whether the next level's estimated input throughput beats this level's. A level
    /// not measured yet is tried.
    fn step_up_pays(&self) -> bool {
        match (self.throughput(self.level + 1), self.throughput(self.level)) {
            (Some(up), Some(here)) => up > STEP_UP_GAIN * here,
            _ => true,
        }
    }

    /// Input bytes per nanosecond at `level`: the slower of the workers compressing and
    /// the writer writing that level's output.
    fn throughput(&self, level: u32) -> Option<f64> {
        let level = level as usize;
        let compress = self.compress[level].get()?;
        let ratio = self.output[level].get()?;
        let write = self.write.get()?;
        let by_workers = if compress > 0.0 { f64::from(self.workers) / compress } else { f64::INFINITY };
        let by_writer = if write * ratio > 0.0 { 1.0 / (write * ratio) } else { f64::INFINITY };
        Some(by_workers.min(by_writer))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Behind, BlockCost, Pace, STEP_AFTER};

    const MIB: u64 = 1 << 20;

    /// A block of 1 MiB at `level`, its output `ratio` of it, compressed in `compress_ms`
    /// and written in `write_ms`.
    fn cost(level: u32, ratio: f64, compress_ms: f64, write_ms: f64) -> BlockCost {
        BlockCost {
            level,
            input: MIB,
            output: (MIB as f64 * ratio) as u64,
            compress: Duration::from_secs_f64(compress_ms / 1e3),
            write: Duration::from_secs_f64(write_ms / 1e3),
        }
    }

    /// What a machine costs per level: (ratio, compress ms per MiB), write ms per MiB out.
    struct Machine {
        levels: [(f64, f64); 3],
        write_ms_per_mib: f64,
    }

    impl Machine {
        fn block(&self, level: u32) -> BlockCost {
            let (ratio, compress_ms) = self.levels[level as usize];
            cost(level, ratio, compress_ms, self.write_ms_per_mib * ratio)
        }
    }

    /// Two cores, text: level 0 stores (0.3 ms a MiB), level 1 deflates to 0.3 at 2.7 ms,
    /// level 2 to 0.22 at 4.8 ms.
    const TEXT: [(f64, f64); 3] = [(1.0, 0.3), (0.3, 2.7), (0.22, 4.8)];

    fn observe_n(pace: &mut Pace, machine: &Machine, behind: Behind, n: i32) -> u32 {
        (0..n).map(|_| pace.observe(behind, machine.block(pace.level()))).last().unwrap_or(pace.level())
    }

    /// A pace on two workers, stepped down from 2 to 0 by compression behind, every level
    /// measured on the way, and the machine it measured (writing `write_ms_per_mib`).
    fn stepped_down_to_0(write_ms_per_mib: f64) -> (Machine, Pace) {
        let machine = Machine { levels: TEXT, write_ms_per_mib };
        let mut pace = Pace::new(0, 2, 2);
        observe_n(&mut pace, &machine, Behind::Workers, 2 * STEP_AFTER);
        assert_eq!(pace.level(), 0);
        (machine, pace)
    }

    #[test]
    fn compression_behind_steps_down_to_the_lowest_and_no_further() {
        let machine = Machine { levels: TEXT, write_ms_per_mib: 0.7 };
        let mut pace = Pace::new(0, 2, 2);
        assert_eq!(pace.level(), 2);
        assert_eq!(observe_n(&mut pace, &machine, Behind::Workers, STEP_AFTER - 1), 2, "one step needs STEP_AFTER blocks");
        assert_eq!(pace.observe(Behind::Workers, machine.block(2)), 1);
        assert_eq!(observe_n(&mut pace, &machine, Behind::Workers, STEP_AFTER), 0);
        assert_eq!(observe_n(&mut pace, &machine, Behind::Workers, 10 * STEP_AFTER), 0);
    }

    /// A disk at 1.5 GB/s: level 0 goes at its speed, level 1 at the workers' 0.75 GB/s.
    /// The writer is behind at level 0, yet stepping up would halve the throughput.
    #[test]
    fn a_fast_output_keeps_the_level_where_compression_would_be_slower() {
        let (machine, mut pace) = stepped_down_to_0(0.7);
        assert_eq!(observe_n(&mut pace, &machine, Behind::Writer, 10 * STEP_AFTER), 0);
    }

    /// An output at 0.2 GB/s (a slow upload): level 1 makes a third of the bytes at 0.75
    /// GB/s of input, faster than storing; level 2 would be bound by its workers at 0.42.
    #[test]
    fn a_slow_output_steps_up_to_the_fastest_level_and_no_further() {
        let (machine, mut pace) = stepped_down_to_0(5.0);
        assert_eq!(observe_n(&mut pace, &machine, Behind::Writer, STEP_AFTER), 1);
        assert_eq!(observe_n(&mut pace, &machine, Behind::Writer, 10 * STEP_AFTER), 1);
        // Slower still (0.05 GB/s): level 2 pays too.
        let crawl = Machine { levels: TEXT, write_ms_per_mib: 20.0 };
        assert_eq!(observe_n(&mut pace, &crawl, Behind::Writer, 20 * STEP_AFTER), 2);
    }

    /// A level not measured yet is tried: the first file's costs are all the pace knows.
    #[test]
    fn an_unmeasured_level_is_tried() {
        let machine = Machine { levels: TEXT, write_ms_per_mib: 0.7 };
        let mut pace = Pace::new(0, 2, 2);
        // Down to 0 with no costs reported (empty blocks say nothing).
        for _ in 0..2 * STEP_AFTER {
            pace.observe(Behind::Workers, BlockCost { input: 0, ..machine.block(pace.level()) });
        }
        assert_eq!(pace.level(), 0);
        assert_eq!(observe_n(&mut pace, &machine, Behind::Writer, STEP_AFTER), 1);
    }

    #[test]
    fn only_runs_on_one_side_move_the_level() {
        let machine = Machine { levels: TEXT, write_ms_per_mib: 20.0 };
        let mut pace = Pace::new(0, 2, 2);
        for _ in 0..10 * STEP_AFTER {
            pace.observe(Behind::Workers, machine.block(pace.level()));
            pace.observe(Behind::Writer, machine.block(pace.level()));
        }
        assert_eq!(pace.level(), 2);
        // Blocks that waited nowhere neither break nor extend a run.
        for _ in 0..STEP_AFTER {
            pace.observe(Behind::Neither, machine.block(pace.level()));
            pace.observe(Behind::Workers, machine.block(pace.level()));
        }
        assert_eq!(pace.level(), 1);
    }

    #[test]
    fn equal_bounds_fix_the_level() {
        let machine = Machine { levels: TEXT, write_ms_per_mib: 20.0 };
        let mut pace = Pace::new(2, 2, 2);
        assert_eq!(observe_n(&mut pace, &machine, Behind::Workers, 10 * STEP_AFTER), 2);
        let pace = Pace::new(9, 6, 2);
        assert_eq!(pace.level(), 6, "lowest above highest is highest");
        let mut pace = Pace::new(1, 1, 2);
        assert_eq!(observe_n(&mut pace, &machine, Behind::Writer, 10 * STEP_AFTER), 1);
    }
}
