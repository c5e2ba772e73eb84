//! Errors of the placer runtime. Each names the placer at fault.

use super::fault::FaultKind;

/// Why a placer component could not be loaded or failed validation. The running version
/// (if any) stays in place when this happens.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a valid component (or not Wasm at all).
    #[error("placer `{placer}`: not a valid WebAssembly component: {reason}")]
    Compile {
        /// The placer's name.
        placer: String,
        /// The compiler's message.
        reason: String,
    },
    /// The component does not export the `placerd:placer/placer` world.
    #[error("placer `{placer}` does not implement the world placerd:placer/placer: {detail}")]
    WrongWorld {
        /// The placer's name.
        placer: String,
        /// What is missing or mistyped, e.g. "missing exports `set-runners`, `place`".
        detail: String,
    },
    /// The component imports something placerd does not provide.
    #[error("placer `{placer}` imports something placerd does not provide: {reason}")]
    Imports {
        /// The placer's name.
        placer: String,
        /// The linker's message, naming the import.
        reason: String,
    },
    /// The component's `configure` returned an error.
    #[error("placer `{placer}` rejected its config: {message}")]
    Configure {
        /// The placer's name.
        placer: String,
        /// The guest's own message.
        message: String,
    },
    /// Instantiating, `configure`, `set-runners` or a sample `place` faulted, or a sample
    /// order was not valid.
    #[error("placer `{placer}` failed validation: {reason}")]
    Validation {
        /// The placer's name.
        placer: String,
        /// What went wrong, on which sample.
        reason: String,
    },
    /// The engine itself could not be set up.
    #[error("placer engine: {0}")]
    Engine(String),
}

/// Why a call got no order from its placer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    /// The placer faulted and `on_placer_fault = "reject"` is set.
    #[error("placer `{placer}` faulted ({kind}) and on_placer_fault = \"reject\"")]
    Rejected {
        /// The placer's name.
        placer: String,
        /// The fault.
        kind: FaultKind,
    },
}
