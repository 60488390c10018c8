//! Waiting on a task (placeholder, filled by the polling engine).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Phase, TaskRef};

/// Where a wait stands; serialisable so a wait can resume with the remaining budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WaitState {
    /// The task.
    pub task_ref: TaskRef,
    /// Polls made so far.
    pub attempts: u32,
    /// The last phase seen.
    pub last_phase: Option<Phase>,
}
