//! Server-side validation of the client and proposal forms, and the premium
//! calculation. Messages are shown next to the field they name, as ASP.NET
//! MVC's `data-valmsg-for` spans do.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

use super::catalogue;
use super::session::{ClientRecord, Quote};

/// Date format of every date field: DD/MM/YYYY.
pub const DATE_FORMAT: &str = "%d/%m/%Y";

/// One validation message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The form field's `name`.
    pub field: String,
    /// What is wrong, as the page shows it.
    pub message: String,
}

/// A posted form.
pub type Form = BTreeMap<String, String>;

struct Check<'a> {
    form: &'a Form,
    errors: Vec<FieldError>,
}

impl<'a> Check<'a> {
    fn new(form: &'a Form) -> Self {
        Self {
            form,
            errors: Vec::new(),
        }
    }

    fn value(&self, field: &str) -> &'a str {
        self.form.get(field).map(|v| v.trim()).unwrap_or("")
    }

    fn fail(&mut self, field: &str, message: &str) {
        // One message per field, like the portal.
        if !self.errors.iter().any(|e| e.field == field) {
            self.errors.push(FieldError {
                field: field.to_owned(),
                message: message.to_owned(),
            });
        }
    }

    fn required(&mut self, field: &str, message: &str) -> Option<&'a str> {
        let value = self.value(field);
        if value.is_empty() {
            self.fail(field, message);
            None
        } else {
            Some(value)
        }
    }

    fn date(&mut self, field: &str, label: &str) -> Option<NaiveDate> {
        let value = self.required(field, &format!("{label} is required"))?;
        match parse_date(value) {
            Some(date) => Some(date),
            None => {
                self.fail(field, &format!("{label} must be a valid date (DD/MM/YYYY)"));
                None
            }
        }
    }

    fn flag(&self, field: &str) -> bool {
        self.value(field) == "true"
    }
}

/// Parses a DD/MM/YYYY date, insisting on two-digit day and month.
pub fn parse_date(value: &str) -> Option<NaiveDate> {
    let shape_ok = value.len() == 10
        && value.char_indices().all(|(i, c)| {
            if i == 2 || i == 5 {
                c == '/'
            } else {
                c.is_ascii_digit()
            }
        });
    if !shape_ok {
        return None;
    }
    NaiveDate::parse_from_str(value, DATE_FORMAT).ok()
}

fn is_name(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_alphabetic() || " .'-".contains(c))
}

fn all_digits(value: &str, len: usize) -> bool {
    value.len() == len && value.chars().all(|c| c.is_ascii_digit())
}

fn is_email(value: &str) -> bool {
    match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !value.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// Checks the client-details form against `today`.
pub fn client(form: &Form, today: NaiveDate) -> Vec<FieldError> {
    let mut c = Check::new(form);
    c.required("Salutation", "Please select a salutation");
    for (field, label) in [("FirstName", "First name"), ("LastName", "Last name")] {
        if let Some(name) = c.required(field, &format!("{label} is required")) {
            if !is_name(name) || name.len() > 40 {
                c.fail(field, &format!("{label} may only contain letters"));
            }
        }
    }
    if let Some(dob) = c.date("DateOfBirth", "Date of birth") {
        if dob >= today {
            c.fail("DateOfBirth", "Date of birth must be in the past");
        } else if years_between(dob, today) < 18 {
            c.fail("DateOfBirth", "Proposer must be at least 18 years old");
        } else if years_between(dob, today) > 100 {
            c.fail("DateOfBirth", "Please check the date of birth");
        }
    }
    c.required("Gender", "Please select a gender");
    if let Some(mobile) = c.required("MobileNo", "Mobile number is required") {
        if !all_digits(mobile, 10) || mobile.starts_with(['0', '1', '2', '3', '4', '5']) {
            c.fail(
                "MobileNo",
                "Mobile number must be 10 digits starting with 6-9",
            );
        }
    }
    if let Some(email) = c.required("EmailId", "Email is required") {
        if !is_email(email) {
            c.fail("EmailId", "Please enter a valid email address");
        }
    }
    c.required("FlatNo", "Flat/door number is required");
    c.required("PremisesName", "Premises/building name is required");
    c.required("RoadName", "Road/street is required");
    c.required("AreaName", "Area/locality is required");
    if let Some(pincode) = c.required("Pincode", "Pincode is required") {
        if !all_digits(pincode, 6) {
            c.fail("Pincode", "Pincode must be 6 digits");
        } else {
            match catalogue::pincode(pincode) {
                None => c.fail("Pincode", "Pincode not found"),
                Some(p) => {
                    if c.value("City") != p.city || c.value("StateCode") != p.state_code {
                        c.fail(
                            "Pincode",
                            "Please search the pincode to fill city and state",
                        );
                    }
                }
            }
        }
    }
    c.errors
}

fn years_between(from: NaiveDate, to: NaiveDate) -> i32 {
    let mut years = to.year() - from.year();
    if (to.month(), to.day()) < (from.month(), from.day()) {
        years -= 1;
    }
    years
}

fn months_between(from: NaiveDate, to: NaiveDate) -> u32 {
    let months = (to.year() - from.year()) * 12 + to.month() as i32 - from.month() as i32;
    u32::try_from(months).unwrap_or(0)
}

/// Fields a premium depends on: a save must post the same values the
/// calculation saw.
pub const QUOTED_FIELDS: &[&str] = &[
    "ProductCode",
    "ClientId",
    "MakeModelCode",
    "RTOCode",
    "MfgMonth",
    "MfgYear",
    "PurchaseDate",
    "IDV",
    "ZeroDep",
    "PACover",
    "TPPD",
    "ODDiscount",
];

/// What a valid proposal form costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Premium {
    /// Own-damage premium after discount.
    pub own_damage: u64,
    /// Third-party premium.
    pub third_party: u64,
    /// Add-on covers.
    pub add_ons: u64,
    /// Premium before tax.
    pub net: u64,
    /// GST at 18%.
    pub gst: u64,
    /// What the customer pays.
    pub total: u64,
}

/// Checks the proposal form (everything but the quote) and prices it.
pub fn proposal(
    form: &Form,
    clients: &std::collections::HashMap<String, ClientRecord>,
    today: NaiveDate,
) -> Result<Premium, Vec<FieldError>> {
    let mut c = Check::new(form);

    let product = c.required("ProductCode", "Please select a product");
    if product.is_some_and(|p| !catalogue::PRODUCTS.iter().any(|x| x.code == p)) {
        c.fail("ProductCode", "Please select a product");
    }
    let branch = c.required("BranchCode", "Please select a branch");
    if branch.is_some_and(|b| catalogue::name_of(catalogue::BRANCHES, b).is_none()) {
        c.fail("BranchCode", "Please select a branch");
    }
    let client = c.value("ClientId");
    if client.is_empty() || !clients.contains_key(client) {
        c.fail("ClientId", "Please enter client details");
    }

    let model =
        catalogue::make_model(c.value("MakeModelCode")).filter(|m| m.name == c.value("MakeModel"));
    if model.is_none() {
        c.fail("MakeModel", "Please select make and model from the list");
    }
    let rto = catalogue::name_of(catalogue::RTO_CITIES, c.value("RTOCode"));
    if rto.is_none() || rto != Some(c.value("RTOCity")) {
        c.fail("RTOCity", "Please select the RTO location from the list");
    }

    let month: u32 = c.value("MfgMonth").parse().unwrap_or(0);
    let year: i32 = c.value("MfgYear").parse().unwrap_or(0);
    let manufactured = NaiveDate::from_ymd_opt(year, month, 1);
    if manufactured.is_none() {
        c.fail(
            "MfgMonth",
            "Please select the month and year of manufacture",
        );
    }

    for (field, label) in [
        ("EngineNo", "Engine number"),
        ("ChassisNo", "Chassis number"),
    ] {
        if let Some(v) = c.required(field, &format!("{label} is required")) {
            if !(6..=20).contains(&v.len()) || !v.chars().all(|ch| ch.is_ascii_alphanumeric()) {
                c.fail(
                    field,
                    &format!("{label} must be 6 to 20 letters and digits"),
                );
            }
        }
    }

    let purchase = c.date("PurchaseDate", "Purchase date");
    let registration = c.date("RegistrationDate", "Registration date");
    if let Some(p) = purchase {
        if p > today {
            c.fail("PurchaseDate", "Purchase date cannot be in the future");
        }
        if manufactured.is_some_and(|m| p < m) {
            c.fail(
                "PurchaseDate",
                "Purchase date is before the manufacturing month",
            );
        }
    }
    if let (Some(p), Some(r)) = (purchase, registration) {
        if r < p {
            c.fail(
                "RegistrationDate",
                "Registration date cannot be before purchase date",
            );
        }
    }

    if !c.flag("IsNewVehicle") {
        let reg = c.value("RegistrationNo");
        let ok = reg.len() >= 8 && reg.chars().all(|ch| ch.is_ascii_alphanumeric());
        if !ok {
            c.fail(
                "RegistrationNo",
                "Registration number is required for a used vehicle",
            );
        }
    }
    if c.flag("IsHypothecated") {
        if !catalogue::FINANCIER_TYPES.contains(&c.value("FinancierType")) {
            c.fail("FinancierType", "Please select the financier type");
        }
        let financier = catalogue::name_of(catalogue::FINANCIERS, c.value("FinancierCode"));
        if financier.is_none() || financier != Some(c.value("FinancierName")) {
            c.fail("FinancierName", "Please select the financier from the list");
        }
        c.required("FinancierAddress", "Financier branch/address is required");
    }

    let idv: Option<u64> = c.value("IDV").parse().ok();
    if let (Some(m), Some(p)) = (model, purchase) {
        let age = manufactured.map_or(0, |made| months_between(made, p));
        let (_, min, max) = catalogue::idv_range(m, age);
        match idv {
            Some(v) if (min..=max).contains(&v) => {}
            _ => c.fail("IDV", &format!("IDV must be between {min} and {max}")),
        }
    } else if idv.is_none() {
        c.fail("IDV", "Please fetch the IDV");
    }

    let discount: Option<u64> = c.value("ODDiscount").parse().ok();
    if discount.is_none_or(|d| d > 70) {
        c.fail(
            "ODDiscount",
            "OD discount must be a whole number from 0 to 70",
        );
    }

    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    // Every value below was checked above.
    let (Some(model), Some(idv), Some(discount)) = (model, idv, discount) else {
        return Err(c.errors);
    };
    let liability_only = product == Some("2312");
    Ok(price(model.cc, idv, discount, liability_only, &c))
}

fn price(cc: u32, idv: u64, discount: u64, liability_only: bool, c: &Check<'_>) -> Premium {
    let own_damage = if liability_only {
        0
    } else {
        // 1.708% of IDV, the tariff rate for small two-wheelers.
        idv * 1708 / 100_000 * (100 - discount) / 100
    };
    let mut third_party = match cc {
        0..=75 => 538,
        76..=150 => 714,
        151..=350 => 1366,
        _ => 2804,
    };
    if c.flag("TPPD") {
        third_party -= 50;
    }
    let mut add_ons = 0;
    if c.flag("ZeroDep") && !liability_only {
        add_ons += idv * 20 / 10_000;
    }
    if c.flag("PACover") {
        add_ons += 375;
    }
    let net = own_damage + third_party + add_ons;
    let gst = net * 18 / 100;
    Premium {
        own_damage,
        third_party,
        add_ons,
        net,
        gst,
        total: net + gst,
    }
}

/// Checks that a save posts what the premium was calculated for.
pub fn matches_quote(form: &Form, quote: &Quote) -> bool {
    QUOTED_FIELDS
        .iter()
        .all(|f| form.get(*f).map(|v| v.trim()) == quote.fields.get(*f).map(|v| v.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 3).expect("date")
    }

    fn good_client() -> Form {
        [
            ("Salutation", "Mr."),
            ("FirstName", "Arjun"),
            ("LastName", "Mehta"),
            ("DateOfBirth", "17/04/1988"),
            ("Gender", "Male"),
            ("MobileNo", "9000012345"),
            ("EmailId", "arjun@example.com"),
            ("FlatNo", "12B"),
            ("PremisesName", "Lakshmi Residency"),
            ("RoadName", "4th Cross"),
            ("AreaName", "Indiranagar"),
            ("Pincode", "560038"),
            ("City", "BENGALURU"),
            ("StateCode", "KA"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn good_client_passes() {
        assert_eq!(client(&good_client(), today()), vec![]);
    }

    #[test]
    fn bad_client_fields_are_named() {
        let mut form = good_client();
        form.insert("MobileNo".into(), "90000".into());
        form.insert("DateOfBirth".into(), "31/02/1990".into());
        form.insert("Pincode".into(), "5600".into());
        let fields: Vec<String> = client(&form, today())
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["DateOfBirth", "MobileNo", "Pincode"]);
    }

    #[test]
    fn dates_need_two_digit_parts() {
        assert!(parse_date("17/04/1988").is_some());
        assert!(parse_date("1988-04-17").is_none());
        assert!(parse_date("7/4/1988").is_none());
        assert!(parse_date("30/02/2020").is_none());
    }
}
