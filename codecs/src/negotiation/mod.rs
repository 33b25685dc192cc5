//! Association negotiation for a storage, verification and query/retrieve
//! SCP: PS3.8 section 7.1, PS3.7 annex D.3.3 (including D.3.3.4, SCP/SCU
//! role selection).
//!
//! [`negotiate`] is a pure function: a decoded A-ASSOCIATE-RQ and an
//! [`AcceptorPolicy`] in, an A-ASSOCIATE-AC or -RJ out, with the reason.

use std::collections::{HashMap, HashSet};

use dicom_core::dictionary::UidDictionary;
use dicom_dictionary_std::StandardSopClassDictionary;
use dicom_ul::pdu::{
    AssociationAC, AssociationRJ, AssociationRJResult, AssociationRJServiceProviderASCEReason,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason,
    AssociationRJSource, AssociationRQ, PresentationContextResult, PresentationContextResultReason,
    RequestorRoles, UserVariableItem,
};

use crate::pdu::trim_padding;

#[cfg(test)]
mod tests;

/// nectar's Implementation Class UID (PS3.7 D.3.3.2), a UUID-derived UID.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.301654325123459387080817478190963538471";
/// nectar's Implementation Version Name (at most 16 characters).
pub const IMPLEMENTATION_VERSION_NAME: &str = "NECTAR_010";

/// The DICOM Application Context Name (PS3.7 annex A.2.1).
pub const DICOM_APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";
/// Verification SOP Class.
pub const VERIFICATION_SOP_CLASS: &str = "1.2.840.10008.1.1";
/// Implicit VR Little Endian, the default transfer syntax.
pub const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";

/// Transfer syntaxes accepted for the Verification SOP Class.
pub const VERIFICATION_TRANSFER_SYNTAXES: &[&str] =
    &[IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN];

/// The query/retrieve SOP classes of PS3.4 annex C this SCP serves.
pub mod query_retrieve {
    pub const PATIENT_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";
    pub const PATIENT_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.1.2";
    pub const PATIENT_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.1.3";
    pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
    pub const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
    pub const STUDY_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";

    /// All of them.
    pub const ALL: &[&str] = &[
        PATIENT_ROOT_FIND,
        PATIENT_ROOT_MOVE,
        PATIENT_ROOT_GET,
        STUDY_ROOT_FIND,
        STUDY_ROOT_MOVE,
        STUDY_ROOT_GET,
    ];
}

/// Transfer syntaxes accepted for the query/retrieve SOP classes (the
/// identifiers are small data sets in a native encoding).
pub const QUERY_RETRIEVE_TRANSFER_SYNTAXES: &[&str] = &[
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    "1.2.840.10008.1.2.2", // Explicit VR Big Endian
];

/// Transfer syntaxes a C-STORE SCP accepts and stores unchanged.
///
/// Every data set encoding (implicit/explicit, little/big endian, deflated)
/// and every encapsulated pixel data syntax current in PS3.5 and in
/// dicom-rs's transfer syntax registry 0.10. Left out: the retired JPEG
/// processes, JPIP referenced syntaxes (pixel data lives on a JPIP server)
/// and SMPTE ST 2110 (real-time video, not for storage).
pub const STORAGE_TRANSFER_SYNTAXES: &[&str] = &[
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    "1.2.840.10008.1.2.1.98", // Encapsulated Uncompressed Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99", // Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",    // Explicit VR Big Endian (retired, still sent)
    "1.2.840.10008.1.2.4.50", // JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51", // JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57", // JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70", // JPEG Lossless, First-Order Prediction (Process 14 SV1)
    "1.2.840.10008.1.2.4.80", // JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81", // JPEG-LS Lossy (Near-Lossless)
    "1.2.840.10008.1.2.4.90", // JPEG 2000 (Lossless Only)
    "1.2.840.10008.1.2.4.91", // JPEG 2000
    "1.2.840.10008.1.2.4.92", // JPEG 2000 Part 2 Multi-component (Lossless Only)
    "1.2.840.10008.1.2.4.93", // JPEG 2000 Part 2 Multi-component
    "1.2.840.10008.1.2.4.201", // HTJ2K (Lossless Only)
    "1.2.840.10008.1.2.4.202", // HTJ2K with RPCL Options (Lossless Only)
    "1.2.840.10008.1.2.4.203", // HTJ2K
    "1.2.840.10008.1.2.4.110", // JPEG XL Lossless
    "1.2.840.10008.1.2.4.111", // JPEG XL JPEG Recompression
    "1.2.840.10008.1.2.4.112", // JPEG XL
    "1.2.840.10008.1.2.5",    // RLE Lossless
    "1.2.840.10008.1.2.8.1",  // Deflated Image Frame Compression
    "1.2.840.10008.1.2.4.100", // MPEG2 Main Profile / Main Level
    "1.2.840.10008.1.2.4.100.1", // Fragmentable MPEG2 MP@ML
    "1.2.840.10008.1.2.4.101", // MPEG2 Main Profile / High Level
    "1.2.840.10008.1.2.4.101.1", // Fragmentable MPEG2 MP@HL
    "1.2.840.10008.1.2.4.102", // MPEG-4 AVC/H.264 High Profile / Level 4.1
    "1.2.840.10008.1.2.4.102.1", // Fragmentable MPEG-4 AVC/H.264 HP@4.1
    "1.2.840.10008.1.2.4.103", // MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1
    "1.2.840.10008.1.2.4.103.1", // Fragmentable MPEG-4 AVC/H.264 BD-compatible
    "1.2.840.10008.1.2.4.104", // MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video
    "1.2.840.10008.1.2.4.104.1", // Fragmentable, 2D Video
    "1.2.840.10008.1.2.4.105", // MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video
    "1.2.840.10008.1.2.4.105.1", // Fragmentable, 3D Video
    "1.2.840.10008.1.2.4.106", // MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2
    "1.2.840.10008.1.2.4.106.1", // Fragmentable, Stereo
    "1.2.840.10008.1.2.4.107", // HEVC/H.265 Main Profile / Level 5.1
    "1.2.840.10008.1.2.4.108", // HEVC/H.265 Main 10 Profile / Level 5.1
];

/// Whether `uid` is a storage SOP class: any SOP class in dicom-rs's standard
/// dictionary (retired ones included) whose name contains "Storage", except
/// Storage Commitment (push and pull), Media Storage Directory Storage and
/// Storage Management. Padding (NUL/space) around `uid` is ignored.
///
/// dicom-dictionary-std keeps its SOP class table crate-private, so this
/// consults its `StandardSopClassDictionary` (a lazily built hash map, the
/// same cost as a cached set) instead of iterating the table.
pub fn is_storage_sop_class(uid: &str) -> bool {
    let Some(entry) = StandardSopClassDictionary.by_uid(trim_padding(uid)) else {
        return false;
    };
    let name = entry.name;
    name.contains("Storage")
        && !name.starts_with("Storage Commitment")
        && !name.starts_with("Storage Management")
        && name != "Media Storage Directory Storage"
}

/// What this acceptor will take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptorPolicy {
    /// Our AE title; compared with the Called AE Title, leading and trailing
    /// spaces ignored, case-sensitive (as dcmtk does).
    pub ae_title: String,
    /// Accept whatever Called AE Title the requestor uses.
    pub accept_any_called_ae: bool,
    /// Calling AE Titles allowed to associate; empty means any.
    pub allowed_calling_ae_titles: Vec<String>,
    /// Our Maximum-length-received, sent in the A-ASSOCIATE-AC (0 = no limit).
    pub max_pdu_length: u32,
}

/// A presentation context this acceptor accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedContext {
    /// Presentation context ID.
    pub id: u8,
    /// Abstract syntax (SOP class UID).
    pub abstract_syntax: String,
    /// The one transfer syntax accepted.
    pub transfer_syntax: String,
    /// The requestor may invoke operations of this SOP class (its SCU role;
    /// true unless role selection proposed otherwise).
    pub requestor_is_scu: bool,
    /// The requestor takes the SCP role for this SOP class, so nectar may send
    /// C-STORE requests on this context (C-GET sub-operations). Only set
    /// through role selection (PS3.7 D.3.3.4).
    pub requestor_is_scp: bool,
}

/// Why an association was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Permanent, service user, called-AE-title-not-recognized (7).
    CalledAeTitleNotRecognized,
    /// Permanent, service user, calling-AE-title-not-recognized (3).
    CallingAeTitleNotRecognized,
    /// Permanent, service user, application-context-name-not-supported (2).
    ApplicationContextNotSupported,
    /// Permanent, service provider (ACSE), protocol-version-not-supported (2).
    ProtocolVersionNotSupported,
    /// Permanent, service user, no-reason-given (1): the request proposed no
    /// presentation context, or two with the same ID.
    NoReasonGiven,
    /// Transient, service provider (presentation), local-limit-exceeded (2).
    LocalLimitExceeded,
}

impl RejectReason {
    /// The A-ASSOCIATE-RJ PDU carrying this reason.
    pub fn to_rj(self) -> AssociationRJ {
        use AssociationRJServiceUserReason as User;
        let (result, source) = match self {
            RejectReason::CalledAeTitleNotRecognized => (
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceUser(User::CalledAETitleNotRecognized),
            ),
            RejectReason::CallingAeTitleNotRecognized => (
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceUser(User::CallingAETitleNotRecognized),
            ),
            RejectReason::ApplicationContextNotSupported => (
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceUser(User::ApplicationContextNameNotSupported),
            ),
            RejectReason::NoReasonGiven => (
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceUser(User::NoReasonGiven),
            ),
            RejectReason::ProtocolVersionNotSupported => (
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceProviderASCE(
                    AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported,
                ),
            ),
            RejectReason::LocalLimitExceeded => (
                AssociationRJResult::Transient,
                AssociationRJSource::ServiceProviderPresentation(
                    AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
                ),
            ),
        };
        AssociationRJ { result, source }
    }
}

/// The outcome of [`negotiate`].
#[derive(Debug, Clone, PartialEq)]
pub enum Negotiation {
    /// Send `ac`; the association is established.
    Accept {
        /// The A-ASSOCIATE-AC to send.
        ac: AssociationAC,
        /// The accepted presentation contexts, in the requestor's order (may be empty).
        contexts: Vec<AcceptedContext>,
        /// The requestor's Maximum-length-received: the largest PDU-length
        /// field we may send in a P-DATA-TF. 0 = no limit (PS3.8 D.1). A
        /// request without the Maximum Length sub-item (which PS3.7 D.3.3.1
        /// makes mandatory) states no limit either, so it also yields 0.
        peer_max_pdu_length: u32,
        /// Calling AE Title, trimmed.
        calling_ae_title: String,
        /// Called AE Title, trimmed.
        called_ae_title: String,
    },
    /// Send `rj` and close.
    Reject {
        /// The A-ASSOCIATE-RJ to send.
        rj: AssociationRJ,
        /// Why.
        reason: RejectReason,
    },
}

/// A-ASSOCIATE-RJ, transient, service provider (presentation related), local
/// limit exceeded: sent above the association limit.
pub fn reject_local_limit() -> AssociationRJ {
    RejectReason::LocalLimitExceeded.to_rj()
}

fn reject(reason: RejectReason) -> Negotiation {
    Negotiation::Reject {
        rj: reason.to_rj(),
        reason,
    }
}

fn trim_ae(s: &str) -> &str {
    s.trim_matches(' ')
}

/// Negotiates an association as a C-STORE and Verification SCP.
///
/// Checks, in order: protocol version bit 0, application context name,
/// Called AE Title (unless `accept_any_called_ae`), Calling AE Title against
/// a non-empty allow-list, at least one presentation context and no
/// duplicate presentation context IDs. Then each presentation context:
///
/// * Verification: first proposed (in the requestor's order) of Implicit or
///   Explicit VR Little Endian;
/// * a storage SOP class ([`is_storage_sop_class`]): first proposed of
///   [`STORAGE_TRANSFER_SYNTAXES`];
/// * anything else: abstract-syntax-not-supported (3);
/// * known class, no syntax supported: transfer-syntaxes-not-supported (4).
///
/// Rejected results echo the first proposed transfer syntax (or "").
/// An association with no accepted context is still accepted, as dcmtk does.
///
/// * a query/retrieve SOP class ([`query_retrieve::ALL`]): first proposed of
///   [`QUERY_RETRIEVE_TRANSFER_SYNTAXES`].
///
/// Role selection (PS3.7 D.3.3.4): each SCP/SCU Role Selection item on a
/// storage SOP class is answered with the roles the requestor proposed, so a
/// C-GET requestor that offers the SCP role gets it and nectar may send
/// C-STORE on those contexts. A requestor that proposes neither role leaves
/// no role for the class, so its contexts are answered user-rejection (1).
/// Items on other classes are not answered (default roles).
pub fn negotiate(rq: &AssociationRQ, policy: &AcceptorPolicy) -> Negotiation {
    if rq.protocol_version & 1 == 0 {
        return reject(RejectReason::ProtocolVersionNotSupported);
    }
    if trim_padding(&rq.application_context_name) != DICOM_APPLICATION_CONTEXT {
        return reject(RejectReason::ApplicationContextNotSupported);
    }
    let called = trim_ae(&rq.called_ae_title);
    let calling = trim_ae(&rq.calling_ae_title);
    if !policy.accept_any_called_ae && called != trim_ae(&policy.ae_title) {
        return reject(RejectReason::CalledAeTitleNotRecognized);
    }
    if !policy.allowed_calling_ae_titles.is_empty()
        && !policy
            .allowed_calling_ae_titles
            .iter()
            .any(|a| trim_ae(a) == calling)
    {
        return reject(RejectReason::CallingAeTitleNotRecognized);
    }
    let mut ids = HashSet::with_capacity(rq.presentation_contexts.len());
    if rq.presentation_contexts.is_empty()
        || !rq.presentation_contexts.iter().all(|pc| ids.insert(pc.id))
    {
        return reject(RejectReason::NoReasonGiven);
    }

    // Role selection replies, first item per SOP class wins.
    let mut role_replies: Vec<UserVariableItem> = Vec::new();
    let mut roles_by_class: HashMap<&str, RequestorRoles> = HashMap::new();
    for item in &rq.user_variables {
        if let UserVariableItem::ScuScpRoleSelectionSubItem(uid, roles) = item {
            let uid = trim_padding(uid);
            if is_storage_sop_class(uid) && !roles_by_class.contains_key(uid) {
                roles_by_class.insert(uid, *roles);
                role_replies.push(UserVariableItem::ScuScpRoleSelectionSubItem(
                    uid.to_owned(),
                    RequestorRoles {
                        scu: roles.scu,
                        scp: roles.scp,
                    },
                ));
            }
        }
    }

    let mut results = Vec::with_capacity(rq.presentation_contexts.len());
    let mut contexts = Vec::new();
    for pc in &rq.presentation_contexts {
        let abstract_syntax = trim_padding(&pc.abstract_syntax);
        let first_proposed = pc
            .transfer_syntaxes
            .first()
            .map(|t| trim_padding(t).to_owned())
            .unwrap_or_default();
        let supported: Option<&[&str]> = if abstract_syntax == VERIFICATION_SOP_CLASS {
            Some(VERIFICATION_TRANSFER_SYNTAXES)
        } else if is_storage_sop_class(abstract_syntax) {
            Some(STORAGE_TRANSFER_SYNTAXES)
        } else if query_retrieve::ALL.contains(&abstract_syntax) {
            Some(QUERY_RETRIEVE_TRANSFER_SYNTAXES)
        } else {
            None
        };
        let roles = roles_by_class.get(abstract_syntax);
        let requestor_is_scu = roles.is_none_or(|r| r.scu);
        let requestor_is_scp = roles.is_some_and(|r| r.scp);
        let (reason, transfer_syntax) = match supported {
            None => (
                PresentationContextResultReason::AbstractSyntaxNotSupported,
                first_proposed,
            ),
            Some(_) if !requestor_is_scu && !requestor_is_scp => (
                PresentationContextResultReason::UserRejection,
                first_proposed,
            ),
            Some(supported) => match pc
                .transfer_syntaxes
                .iter()
                .map(|t| trim_padding(t))
                .find(|t| supported.contains(t))
            {
                Some(ts) => {
                    contexts.push(AcceptedContext {
                        id: pc.id,
                        abstract_syntax: abstract_syntax.to_owned(),
                        transfer_syntax: ts.to_owned(),
                        requestor_is_scu,
                        requestor_is_scp,
                    });
                    (PresentationContextResultReason::Acceptance, ts.to_owned())
                }
                None => (
                    PresentationContextResultReason::TransferSyntaxesNotSupported,
                    first_proposed,
                ),
            },
        };
        results.push(PresentationContextResult {
            id: pc.id,
            reason,
            transfer_syntax,
        });
    }

    let peer_max_pdu_length = rq
        .user_variables
        .iter()
        .find_map(|v| match v {
            UserVariableItem::MaxLength(n) => Some(*n),
            _ => None,
        })
        .unwrap_or(0);

    // Sub-items in item-type order: 51H, 52H, 54H, 55H.
    let mut user_variables = Vec::with_capacity(3 + role_replies.len());
    user_variables.push(UserVariableItem::MaxLength(policy.max_pdu_length));
    user_variables.push(UserVariableItem::ImplementationClassUID(
        IMPLEMENTATION_CLASS_UID.to_owned(),
    ));
    user_variables.extend(role_replies);
    user_variables.push(UserVariableItem::ImplementationVersionName(
        IMPLEMENTATION_VERSION_NAME.to_owned(),
    ));

    let ac = AssociationAC {
        protocol_version: 1,
        calling_ae_title: calling.to_owned(),
        called_ae_title: called.to_owned(),
        application_context_name: DICOM_APPLICATION_CONTEXT.to_owned(),
        presentation_contexts: results,
        user_variables,
    };
    Negotiation::Accept {
        ac,
        contexts,
        peer_max_pdu_length,
        calling_ae_title: calling.to_owned(),
        called_ae_title: called.to_owned(),
    }
}
