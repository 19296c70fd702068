//! The deflate level of each block of a large file, chosen by where the pipeline waits.
//! When the workers are behind (the writer waits for a block it was handed), the level
//! steps down, to stored deflate blocks at the bottom; when the writer is behind (the disk,
//! a slow upload: each block is done when its turn comes), it steps back up to the
//! configured level, one level per step. A backup can then go as fast as the disk takes
//! it, spending on compression only the CPU time that is spare: on two cores, level 2
//! deflates text at about 400 MB/s, well below what a disk writes.
//!
//! Pure: the pipeline reports what it saw and reads the level back.

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

/// Consecutive blocks behind on the same side before the level moves by one: a few MiB,
/// so a phase of text after one of random data (or the reverse) is followed quickly, while
/// a single late block moves nothing.
const STEP_AFTER: i32 = 4;

#[derive(Debug, Clone)]
pub(super) struct Pace {
    lowest: u32,
    highest: u32,
    level: u32,
    /// Negative: blocks in a row with the workers behind; positive: with the writer behind.
    run: i32,
}

impl Pace {
    /// Starts at `highest`; never leaves `lowest..=highest` (equal bounds: a fixed level).
    pub(super) fn new(lowest: u32, highest: u32) -> Self {
        let lowest = lowest.min(highest);
        Self { lowest, highest, level: highest, run: 0 }
    }

    pub(super) fn level(&self) -> u32 {
        self.level
    }

    /// Takes in where the last block waited; returns the level for the next ones.
    pub(super) fn observe(&mut self, behind: Behind) -> u32 {
        match behind {
            Behind::Workers => self.run = self.run.min(0) - 1,
            Behind::Writer => self.run = self.run.max(0) + 1,
            Behind::Neither => {}
        }
        if self.run <= -STEP_AFTER {
            self.level = self.level.saturating_sub(1).max(self.lowest);
            self.run = 0;
        } else if self.run >= STEP_AFTER {
            self.level = (self.level + 1).min(self.highest);
            self.run = 0;
        }
        self.level
    }
}

#[cfg(test)]
mod tests {
    use super::{Behind, Pace, STEP_AFTER};

    fn observe_n(pace: &mut Pace, behind: Behind, n: i32) -> u32 {
        (0..n).map(|_| pace.observe(behind)).last().unwrap_or(pace.level())
    }

    #[test]
    fn compression_behind_steps_down_to_the_lowest_and_no_further() {
        let mut pace = Pace::new(0, 2);
        assert_eq!(pace.level(), 2);
        assert_eq!(observe_n(&mut pace, Behind::Workers, STEP_AFTER - 1), 2, "one step needs STEP_AFTER blocks");
        assert_eq!(pace.observe(Behind::Workers), 1);
        assert_eq!(observe_n(&mut pace, Behind::Workers, STEP_AFTER), 0);
        assert_eq!(observe_n(&mut pace, Behind::Workers, 10 * STEP_AFTER), 0);
    }

    #[test]
    fn output_behind_steps_back_up_to_the_highest_and_no_further() {
        let mut pace = Pace::new(0, 2);
        observe_n(&mut pace, Behind::Workers, 2 * STEP_AFTER);
        assert_eq!(pace.level(), 0);
        assert_eq!(observe_n(&mut pace, Behind::Writer, STEP_AFTER), 1);
        assert_eq!(observe_n(&mut pace, Behind::Writer, 10 * STEP_AFTER), 2);
    }

    #[test]
    fn only_runs_on_one_side_move_the_level() {
        let mut pace = Pace::new(0, 2);
        for _ in 0..10 * STEP_AFTER {
            pace.observe(Behind::Workers);
            pace.observe(Behind::Writer);
        }
        assert_eq!(pace.level(), 2);
        // Blocks that waited nowhere neither break nor extend a run.
        for _ in 0..STEP_AFTER {
            pace.observe(Behind::Neither);
            pace.observe(Behind::Workers);
        }
        assert_eq!(pace.level(), 1);
    }

    #[test]
    fn equal_bounds_fix_the_level() {
        let mut pace = Pace::new(6, 6);
        assert_eq!(observe_n(&mut pace, Behind::Workers, 10 * STEP_AFTER), 6);
        let mut pace = Pace::new(9, 6);
        assert_eq!(observe_n(&mut pace, Behind::Workers, 10 * STEP_AFTER), 6, "lowest above highest is highest");
    }
}
