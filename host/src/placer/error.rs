//! Errors of the placer runtime. Each names the placer at fault and keeps its cause as
//! the error's source; [`LoadError::report`] gives the whole chain on one line.

use super::fault::FaultKind;

/// Why a placer component could not be loaded or failed validation. The running version
/// (if any) stays in place when this happens.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is larger than placerd compiles.
    #[error("placer `{placer}`: {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// The placer's name.
        placer: String,
        /// The component's size.
        size: usize,
        /// The largest size placerd compiles.
        limit: usize,
    },
    /// The bytes are not a valid component (or not Wasm at all).
    #[error("placer `{placer}`: not a valid WebAssembly component")]
    Compile {
        /// The placer's name.
        placer: String,
        /// What the bytes are instead, and what to do, in plain words ([`what_is`]).
        hint: &'static str,
        /// The compiler's error.
        #[source]
        source: wasmtime::Error,
    },
    /// The component does not export the `placerd:placer/placer` world.
    #[error("placer `{placer}` does not implement the world placerd:placer/placer: {detail}")]
    WrongWorld {
        /// The placer's name.
        placer: String,
        /// What is missing or mistyped, e.g. "missing export function `place`".
        detail: String,
    },
    /// The component's exports have the right names but the wrong types.
    #[error("placer `{placer}` does not implement the world placerd:placer/placer@{}", contract.version())]
    WrongTypes {
        /// The placer's name.
        placer: String,
        /// The contract it claims (by the `types` interface it imports).
        contract: super::Contract,
        /// The type checker's error.
        #[source]
        source: wasmtime::Error,
    },
    /// The component imports something placerd does not provide.
    #[error("placer `{placer}` imports something placerd does not provide")]
    Imports {
        /// The placer's name.
        placer: String,
        /// The linker's error, naming the import.
        #[source]
        source: wasmtime::Error,
    },
    /// The component's `configure` returned an error.
    #[error("placer `{placer}` rejected its config: {message}")]
    Configure {
        /// The placer's name.
        placer: String,
        /// The guest's own message.
        message: String,
    },
    /// The first instance could not be built: a trap, the budget or the memory cap while
    /// instantiating or in `configure`.
    #[error("placer `{placer}` failed validation: instantiate")]
    Instantiate {
        /// The placer's name.
        placer: String,
        /// The fault.
        #[source]
        fault: FaultKind,
    },
    /// `set-runners` or a sample `place` faulted, or a sample order was not valid.
    #[error("placer `{placer}` failed validation: {reason}")]
    Validation {
        /// The placer's name.
        placer: String,
        /// What went wrong, on which sample.
        reason: String,
        /// The fault, when a guest call faulted.
        #[source]
        fault: Option<FaultKind>,
    },
    /// Instantiating, `configure` and the sample placements took longer than the install
    /// time limit (compiling is not counted).
    #[error("placer `{placer}`: validating (instantiate, configure, sample placements) took longer than {limit:?}")]
    TimedOut {
        /// The placer's name.
        placer: String,
        /// The limit.
        limit: std::time::Duration,
    },
    /// The engine could not be set up.
    #[error("placer engine")]
    Engine(#[source] wasmtime::Error),
    /// The watchdog thread (which stops guest calls past their deadline) could not be started.
    #[error("placer engine: cannot start the deadline watchdog thread")]
    Ticker(#[source] std::io::Error),
}

/// What `bytes` are, for an error about bytes that did not compile as a component.
pub(super) fn what_is(bytes: &[u8]) -> &'static str {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
            "it is a core WebAssembly module, not a component: build for wasm32-wasip2 (`cargo build --target wasm32-wasip2`) or wrap it with `wasm-tools component new`"
        }
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => {
            "it is a WebAssembly component that does not validate (truncated, corrupt, or built with features placerd does not enable)"
        }
        _ if bytes.is_empty() => "the body is empty: send the component's bytes (curl --data-binary @placer.wasm)",
        _ => {
            "it is not WebAssembly at all (it does not start with \\0asm): send the component's bytes, e.g. curl --data-binary @placer.wasm"
        }
    }
}

impl LoadError {
    /// What failed, in plain words on one line, without the engine's internal detail (for
    /// the admin API's `message`; [`LoadError::report`] has the whole chain).
    pub fn plain(&self) -> String {
        let first_line = |e: &dyn std::fmt::Display| {
            let text = e.to_string();
            let line = text.lines().next().unwrap_or_default().trim().to_string();
            if line.len() > 200 { format!("{}…", &line[..line.floor_char_boundary(200)]) } else { line }
        };
        match self {
            LoadError::Compile { hint, .. } => format!("{self}: {hint}"),
            LoadError::Imports { source, .. } => format!("{self}: {}", first_line(source)),
            LoadError::WrongTypes { .. } => {
                format!(
                    "{self}: its functions' types differ from that contract's wit/placer.wit; rebuild it against it"
                )
            }
            LoadError::Instantiate { fault, .. } | LoadError::Validation { fault: Some(fault), .. } => {
                format!("{self}: {}", first_line(fault))
            }
            _ => self.to_string(),
        }
    }

    /// The message and every cause below it, on one line (`a: b: c`), for logs, the admin
    /// API and `placerd check`.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cause = e.source();
        }
        printable(&out, MAX_REPORT).into_owned()
    }
}

/// The longest guest-supplied text placerd logs or shows (a `configure` error, a trap).
const MAX_REPORT: usize = 4096;

/// The first `max_bytes` of `text` (cut on a character boundary, `…` added when cut),
/// with control characters (newlines, carriage returns, escape sequences) escaped, which
/// can make the result longer: text a guest wrote stays one line in a log and cannot forge
/// another.
pub(crate) fn printable(text: &str, max_bytes: usize) -> std::borrow::Cow<'_, str> {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = &text[..end];
    if end == text.len() && !cut.chars().any(char::is_control) {
        return cut.into();
    }
    let mut out = String::with_capacity(cut.len() + 3);
    for c in cut.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if end < text.len() {
        out.push('…');
    }
    out.into()
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
