//! The ledger: every proposal the simulated portal saved, with every field
//! exactly as it was posted, so tests can count duplicates and compare what
//! was typed with what the job asked for.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One saved proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The number the portal showed, e.g. `R202600000001`.
    pub proposal_no: String,
    /// When it was saved.
    pub at: DateTime<Utc>,
    /// Label of the session that saved it (`S0001`, ...), not the cookie.
    pub session: String,
    /// The client-details form and the proposal form as posted, merged.
    /// Client fields: `Salutation`, `FirstName`, `LastName`, `DateOfBirth`,
    /// `Gender`, `MobileNo`, `EmailId`, `FlatNo`, `FloorNo`, `PremisesName`,
    /// `RoadName`, `AreaName`, `Pincode`, `City`, `StateCode`. Proposal
    /// fields: see `src/portal_sim/README.md`.
    pub fields: BTreeMap<String, String>,
    /// Total premium in rupees, tax included.
    pub total_premium: u64,
    /// Whether the payment link was sent afterwards.
    pub payment_link_sent: bool,
}
