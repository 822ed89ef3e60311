//! The portal's master data: products, branches, make-models, RTO cities,
//! financiers and pincodes. The type-ahead lists and the validation both read
//! from here, and `examples/jobs.json` only uses values listed here.

/// A product of the product drop-down.
#[derive(Debug, Clone, Copy)]
pub struct Product {
    /// Code posted with the form.
    pub code: &'static str,
    /// Text shown in the drop-down.
    pub name: &'static str,
}

/// Two-wheeler products.
pub const PRODUCTS: &[Product] = &[
    Product {
        code: "2311",
        name: "Two Wheeler Package Policy",
    },
    Product {
        code: "2312",
        name: "Two Wheeler Liability Only",
    },
    Product {
        code: "2314",
        name: "Two Wheeler Bundled (1 Year OD + 5 Year TP)",
    },
];

/// Branches of the agent's account: (code, name). Every product is sold from
/// every branch.
pub const BRANCHES: &[(&str, &str)] = &[
    ("101", "BANGALORE - MG ROAD"),
    ("102", "MUMBAI - LOWER PAREL"),
    ("103", "NEW DELHI - CONNAUGHT PLACE"),
    ("104", "CHENNAI - T NAGAR"),
    ("105", "HYDERABAD - BANJARA HILLS"),
    ("106", "PUNE - SHIVAJINAGAR"),
];

/// A vehicle make and model.
#[derive(Debug, Clone, Copy)]
pub struct MakeModel {
    /// Code posted with the form.
    pub code: &'static str,
    /// Make and model as the list shows them.
    pub name: &'static str,
    /// Engine capacity in cc.
    pub cc: u32,
    /// Ex-showroom price in rupees, the base of the IDV.
    pub ex_showroom: u64,
}

const fn mm(code: &'static str, name: &'static str, cc: u32, ex_showroom: u64) -> MakeModel {
    MakeModel {
        code,
        name,
        cc,
        ex_showroom,
    }
}

/// Two-wheeler make-models.
pub const MAKE_MODELS: &[MakeModel] = &[
    mm("HON001", "HONDA ACTIVA 6G STD", 110, 76_000),
    mm("HON002", "HONDA ACTIVA 6G DLX", 110, 82_000),
    mm("HON003", "HONDA SHINE 125 DRUM", 124, 80_000),
    mm("HON004", "HONDA UNICORN 160 STD", 162, 112_000),
    mm("HER001", "HERO SPLENDOR PLUS XTEC", 97, 79_000),
    mm("HER002", "HERO HF DELUXE SELF START", 97, 64_000),
    mm("HER003", "HERO PASSION PRO DISC", 113, 84_000),
    mm("TVS001", "TVS JUPITER 110 STD", 110, 74_000),
    mm("TVS002", "TVS APACHE RTR 160 4V", 160, 124_000),
    mm("TVS003", "TVS NTORQ 125 RACE EDITION", 124, 92_000),
    mm("BAJ001", "BAJAJ PULSAR 150 TWIN DISC", 149, 115_000),
    mm("BAJ002", "BAJAJ PLATINA 100 ES", 102, 68_000),
    mm("RE001", "ROYAL ENFIELD CLASSIC 350 REDDITCH", 349, 193_000),
    mm("RE002", "ROYAL ENFIELD HUNTER 350 RETRO", 349, 150_000),
    mm("SUZ001", "SUZUKI ACCESS 125 STD", 124, 80_000),
    mm("YAM001", "YAMAHA FZ S FI V4", 149, 125_000),
    mm("YAM002", "YAMAHA RAY ZR 125 FI HYBRID", 125, 85_000),
];

/// RTO locations: (code, name as the list shows it).
pub const RTO_CITIES: &[(&str, &str)] = &[
    ("KA01", "KA-01 BANGALORE CENTRAL"),
    ("KA03", "KA-03 BANGALORE EAST"),
    ("KA05", "KA-05 BANGALORE SOUTH"),
    ("KA19", "KA-19 MANGALORE"),
    ("MH01", "MH-01 MUMBAI CENTRAL"),
    ("MH02", "MH-02 MUMBAI WEST"),
    ("MH12", "MH-12 PUNE"),
    ("DL03", "DL-03 DELHI SOUTH"),
    ("DL08", "DL-08 DELHI NORTH WEST"),
    ("TN01", "TN-01 CHENNAI CENTRAL"),
    ("TN09", "TN-09 CHENNAI WEST"),
    ("TS09", "TS-09 HYDERABAD CENTRAL"),
    ("GJ01", "GJ-01 AHMEDABAD"),
    ("WB01", "WB-01 KOLKATA"),
    ("RJ14", "RJ-14 JAIPUR SOUTH"),
    ("UP32", "UP-32 LUCKNOW"),
    ("KL07", "KL-07 ERNAKULAM"),
    ("MP04", "MP-04 BHOPAL"),
];

/// Financiers: (code, name).
pub const FINANCIERS: &[(&str, &str)] = &[
    ("F001", "HDFC BANK LTD"),
    ("F002", "ICICI BANK LTD"),
    ("F003", "STATE BANK OF INDIA"),
    ("F004", "AXIS BANK LTD"),
    ("F005", "BAJAJ FINANCE LTD"),
    ("F006", "HERO FINCORP LTD"),
    ("F007", "TVS CREDIT SERVICES LTD"),
    ("F008", "KOTAK MAHINDRA BANK LTD"),
    ("F009", "L&T FINANCE LTD"),
    ("F010", "SHRIRAM FINANCE LTD"),
    ("F011", "IDFC FIRST BANK LTD"),
    ("F012", "MUTHOOT CAPITAL SERVICES LTD"),
];

/// Financier types of the financier-type select.
pub const FINANCIER_TYPES: &[&str] = &["Hypothecation", "Hire Purchase", "Lease"];

/// A pincode and where it is.
#[derive(Debug, Clone, Copy)]
pub struct Pincode {
    /// Six digits.
    pub pincode: &'static str,
    /// City.
    pub city: &'static str,
    /// State name, upper case.
    pub state: &'static str,
    /// The portal's state code.
    pub state_code: &'static str,
}

const fn pin(
    pincode: &'static str,
    city: &'static str,
    state: &'static str,
    state_code: &'static str,
) -> Pincode {
    Pincode {
        pincode,
        city,
        state,
        state_code,
    }
}

/// Pincodes the pincode search knows.
pub const PINCODES: &[Pincode] = &[
    pin("560001", "BENGALURU", "KARNATAKA", "KA"),
    pin("560038", "BENGALURU", "KARNATAKA", "KA"),
    pin("560076", "BENGALURU", "KARNATAKA", "KA"),
    pin("575001", "MANGALURU", "KARNATAKA", "KA"),
    pin("400001", "MUMBAI", "MAHARASHTRA", "MH"),
    pin("400053", "MUMBAI", "MAHARASHTRA", "MH"),
    pin("411001", "PUNE", "MAHARASHTRA", "MH"),
    pin("411038", "PUNE", "MAHARASHTRA", "MH"),
    pin("110017", "NEW DELHI", "DELHI", "DL"),
    pin("110085", "NEW DELHI", "DELHI", "DL"),
    pin("600017", "CHENNAI", "TAMIL NADU", "TN"),
    pin("600040", "CHENNAI", "TAMIL NADU", "TN"),
    pin("500034", "HYDERABAD", "TELANGANA", "TS"),
    pin("380009", "AHMEDABAD", "GUJARAT", "GJ"),
    pin("700019", "KOLKATA", "WEST BENGAL", "WB"),
    pin("302015", "JAIPUR", "RAJASTHAN", "RJ"),
    pin("226010", "LUCKNOW", "UTTAR PRADESH", "UP"),
    pin("682016", "KOCHI", "KERALA", "KL"),
    pin("462016", "BHOPAL", "MADHYA PRADESH", "MP"),
];

/// The make-model with this code.
pub fn make_model(code: &str) -> Option<&'static MakeModel> {
    MAKE_MODELS.iter().find(|m| m.code == code)
}

/// The pincode entry for these six digits.
pub fn pincode(digits: &str) -> Option<&'static Pincode> {
    PINCODES.iter().find(|p| p.pincode == digits)
}

/// The name listed against `code` in a (code, name) list.
pub fn name_of(list: &[(&'static str, &'static str)], code: &str) -> Option<&'static str> {
    list.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// Entries of a (code, name) list whose name contains `query`, ignoring case,
/// at most `limit` of them.
pub fn search(
    list: &[(&'static str, &'static str)],
    query: &str,
    limit: usize,
) -> Vec<(&'static str, &'static str)> {
    let query = query.trim().to_uppercase();
    list.iter()
        .filter(|(_, name)| name.to_uppercase().contains(&query))
        .take(limit)
        .copied()
        .collect()
}

/// Make-models as a (code, name) list.
pub fn make_model_names() -> Vec<(&'static str, &'static str)> {
    MAKE_MODELS.iter().map(|m| (m.code, m.name)).collect()
}

/// The system IDV of a make-model and the range an agent may choose from.
///
/// The vehicle's age is counted at its purchase date, not today, so a
/// proposal that is valid stays valid however late it is replayed.
pub fn idv_range(model: &MakeModel, age_months: u32) -> (u64, u64, u64) {
    let depreciation_pct = match age_months {
        0..=5 => 5,
        6..=11 => 15,
        12..=23 => 20,
        24..=35 => 30,
        36..=47 => 40,
        _ => 50,
    };
    let idv = model.ex_showroom * (100 - depreciation_pct) / 100;
    (idv, idv * 85 / 100, idv * 115 / 100)
}
