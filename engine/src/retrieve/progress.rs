//! Sub-operation counts of one C-GET or C-MOVE and the status they lead to
//! (PS3.4 C.4.2.1.5, C.4.3.1.5, PS3.7 9.3.3.2, 9.3.4.2).

use nectar_codecs::command::{status, SubOperations};

/// The outcome of one C-STORE sub-operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubOperationResult {
    Completed,
    Warning,
    Failed,
}

impl SubOperationResult {
    /// Classifies the status of a sub-operation's C-STORE-RSP: 0x0000 completed;
    /// 0xB000 to 0xBFFF, 0x0107 and 0x0116 warning; anything else failed.
    pub fn from_store_status(store_status: u16) -> SubOperationResult {
        match store_status {
            status::SUCCESS => SubOperationResult::Completed,
            0xB000..=0xBFFF | status::ATTRIBUTE_LIST_ERROR | status::ATTRIBUTE_VALUE_OUT_OF_RANGE => {
                SubOperationResult::Warning
            }
            _ => SubOperationResult::Failed,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SubOperationResult::Completed => "completed",
            SubOperationResult::Warning => "warning",
            SubOperationResult::Failed => "failed",
        }
    }
}

/// Counts of one retrieve. DIMSE carries them as 16-bit values, so a count
/// above 65535 is reported as 65535.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    total: usize,
    completed: usize,
    warning: usize,
    failed_uids: Vec<String>,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        Progress { total, ..Progress::default() }
    }

    pub fn record(&mut self, result: SubOperationResult, sop_instance_uid: &str) {
        match result {
            SubOperationResult::Completed => self.completed += 1,
            SubOperationResult::Warning => self.warning += 1,
            SubOperationResult::Failed => self.failed_uids.push(sop_instance_uid.to_owned()),
        }
    }

    pub fn done(&self) -> usize {
        self.completed + self.warning + self.failed_uids.len()
    }

    pub fn remaining(&self) -> usize {
        self.total - self.done()
    }

    pub fn completed(&self) -> usize {
        self.completed
    }

    pub fn warning(&self) -> usize {
        self.warning
    }

    pub fn failed(&self) -> usize {
        self.failed_uids.len()
    }

    pub fn failed_uids(&self) -> &[String] {
        &self.failed_uids
    }

    /// Returns the counts of a Pending response.
    pub fn pending_counts(&self) -> SubOperations {
        SubOperations { remaining: Some(clamp(self.remaining())), ..self.final_counts(false) }
    }

    /// Returns the counts of the final response, with Remaining only after a cancel.
    pub fn final_counts(&self, cancelled: bool) -> SubOperations {
        SubOperations {
            remaining: cancelled.then(|| clamp(self.remaining())),
            completed: clamp(self.completed),
            failed: clamp(self.failed()),
            warning: clamp(self.warning),
        }
    }

    /// Returns the final status. It is Cancel after a cancel, Success only when
    /// every sub-operation completed, Failure 0xA702 when all failed, else Warning.
    pub fn final_status(&self, cancelled: bool) -> u16 {
        if cancelled {
            status::CANCEL
        } else if self.failed() == 0 && self.warning == 0 {
            status::SUCCESS
        } else if self.completed == 0 && self.warning == 0 {
            status::OUT_OF_RESOURCES_UNABLE_TO_PERFORM_SUB_OPERATIONS
        } else {
            status::SUB_OPERATIONS_COMPLETE_WITH_FAILURES
        }
    }
}

fn clamp(count: usize) -> u16 {
    u16::try_from(count).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_status_classes() {
        assert_eq!(SubOperationResult::from_store_status(0x0000), SubOperationResult::Completed);
        for warning in [0xB000, 0xB007, 0xBFFF, 0x0107, 0x0116] {
            assert_eq!(SubOperationResult::from_store_status(warning), SubOperationResult::Warning, "{warning:#06x}");
        }
        for failure in [0xA700, 0xA900, 0xC000, 0x0110, 0x0211, 0xFF00] {
            assert_eq!(SubOperationResult::from_store_status(failure), SubOperationResult::Failed, "{failure:#06x}");
        }
    }

    #[test]
    fn final_status_rules() {
        let mut progress = Progress::new(3);
        assert_eq!(progress.final_status(false), status::SUCCESS, "nothing failed yet");
        progress.record(SubOperationResult::Failed, "1.1");
        assert_eq!(progress.final_status(false), 0xA702);
        progress.record(SubOperationResult::Completed, "1.2");
        assert_eq!(progress.final_status(false), 0xB000);
        assert_eq!(progress.final_status(true), status::CANCEL);
        assert_eq!(progress.pending_counts(), SubOperations { remaining: Some(1), completed: 1, failed: 1, warning: 0 });
        assert_eq!(progress.final_counts(false).remaining, None);
        assert_eq!(progress.final_counts(true).remaining, Some(1));
        assert_eq!(progress.failed_uids(), ["1.1"]);
    }

    #[test]
    fn warnings_only_is_warning() {
        let mut progress = Progress::new(1);
        progress.record(SubOperationResult::Warning, "1.1");
        assert_eq!(progress.final_status(false), 0xB000);
    }

    #[test]
    fn empty_retrieve_succeeds() {
        assert_eq!(Progress::new(0).final_status(false), status::SUCCESS);
    }
}
