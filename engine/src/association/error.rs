//! Why an association ended other than by release.

use nectar_codecs::pdu::abort_reason;

#[derive(Debug, thiserror::Error)]
pub enum AssociationError {
    #[error("socket I/O failed: {0}")]
    Io(#[from] std::io::Error),

    /// `timer` is "ARTIM" before A-ASSOCIATE-RQ and "idle" on an established association.
    #[error("{timer} timer expired: no PDU within {seconds} s")]
    Timeout { timer: &'static str, seconds: u64 },

    /// The peer broke PS3.8; the association is aborted with `reason`
    /// (an A-ABORT provider reason, PS3.8 section 9.3.8).
    #[error("protocol violation: {detail}")]
    Protocol { reason: u8, detail: String },

    #[error("shutdown deadline passed")]
    ShutdownDeadline,
}

impl AssociationError {
    pub fn unexpected_pdu(detail: impl Into<String>) -> Self {
        AssociationError::Protocol { reason: abort_reason::UNEXPECTED_PDU, detail: detail.into() }
    }

    pub fn unrecognized_pdu(detail: impl Into<String>) -> Self {
        AssociationError::Protocol { reason: abort_reason::UNRECOGNIZED_PDU, detail: detail.into() }
    }

    pub fn invalid_parameter(detail: impl Into<String>) -> Self {
        AssociationError::Protocol { reason: abort_reason::INVALID_PDU_PARAMETER, detail: detail.into() }
    }

    /// The label used for this error in the `nectar_association_errors_total` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            AssociationError::Io(_) => "io",
            AssociationError::Timeout { .. } => "timeout",
            AssociationError::Protocol { .. } => "protocol",
            AssociationError::ShutdownDeadline => "shutdown",
        }
    }
}
