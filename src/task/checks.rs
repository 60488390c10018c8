//! The checked parts of the task model: the ways to make a [`TaskRef`] (by
//! name with [`TaskRef::new`], which looks the provider up in the registry;
//! with an extra input; parsed from `provider:id?name=value`; read back from
//! JSON) and reading a task's body as a generated type ([`Task::typed`]).
//! Each returns an [`Error`] that says what is wrong, so this module sits
//! above the errors and the registry (ARCHITECTURE.md), while the task model
//! itself stays plain data below them. A child module of `task`, it sees the
//! private fields it fills.

use std::collections::BTreeMap;
use std::str::FromStr;

use percent_encoding::percent_decode_str;
use serde::Deserialize;

use super::{Task, TaskRef, TaskRefFields};
use crate::Error;
use crate::error::{InvalidTaskId, InvalidTaskRef, TypedBody};
use crate::spec::ProviderSpec;
use crate::text::excerpt;

/// Characters refused in ids unless the provider's spec allows them
/// (`x-taskpoll.get.id.allow`): some servers decode `%2F` before routing, and
/// `;` starts path parameters at others, so either may address another resource.
const REFUSED_BY_DEFAULT: [char; 2] = ['/', ';'];

/// Refuses ids that cannot be sent as exactly one path segment or body value
/// at this provider.
fn validate_id(spec: &ProviderSpec, id: &str) -> Result<(), Error> {
    let reason = if id.is_empty() {
        "is empty"
    } else if id == "." || id == ".." {
        "is a dot segment (it would address another resource)"
    } else if id.len() > TaskRef::MAX_ID_LEN {
        "is longer than 512 bytes"
    } else if id.chars().any(char::is_control) {
        "contains control characters"
    } else if id.contains('\\') {
        // URL parsers treat `\` as `/`, and progenitor does not escape it: `a\..\x` would leave its segment.
        "contains a backslash"
    } else if id.trim() != id {
        "has leading or trailing whitespace"
    } else if id.contains(|c| REFUSED_BY_DEFAULT.contains(&c) && !spec.get.id_allow.contains(c)) {
        "contains `/` or `;`, which this provider's spec does not allow in ids (some servers decode `%2F` before routing)"
    } else {
        return Ok(());
    };
    Err(Error::InvalidTaskId(InvalidTaskId { id: excerpt(id, 80), reason }))
}

impl TaskRef {
    /// A reference to task `id` at `provider`. Checks the id and that the provider exists.
    pub fn new(provider: &str, id: impl Into<String>) -> Result<Self, Error> {
        Self::of_spec(crate::spec::known_provider(provider)?, id)
    }

    /// A reference to task `id` at the provider `spec` describes, with the
    /// id checked: for code that holds the spec already (no lookup by name).
    pub(crate) fn of_spec(spec: &'static ProviderSpec, id: impl Into<String>) -> Result<Self, Error> {
        let id: String = id.into();
        validate_id(spec, &id)?;
        Ok(Self { provider: spec, id: id.into(), inputs: BTreeMap::new() })
    }

    /// Adds an extra input the provider's spec declares (e.g. `refID`).
    /// An empty value is refused: leave the input out instead.
    pub fn with_input(mut self, name: &str, value: impl Into<String>) -> Result<Self, Error> {
        let spec = self.provider;
        let Some(input) = spec.get.inputs.iter().find(|i| i.name == name) else {
            let known: Vec<&str> = spec.get.inputs.iter().map(|i| i.name).collect();
            return Err(Error::InvalidTaskRef(InvalidTaskRef {
                input: self.to_string(),
                reason: format!(
                    "{} takes no input `{name}` (it takes: {})",
                    spec.name,
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            }));
        };
        let value = value.into();
        if value.is_empty() {
            return Err(Error::InvalidTaskRef(InvalidTaskRef {
                input: self.to_string(),
                reason: format!("input `{name}` is empty (leave it out instead)"),
            }));
        }
        if value.chars().any(char::is_control) || value.len() > TaskRef::MAX_ID_LEN {
            return Err(Error::InvalidTaskRef(InvalidTaskRef {
                input: excerpt(&value, 80),
                reason: format!("input `{name}` contains control characters or is too long"),
            }));
        }
        self.inputs.insert(input.name.to_string(), value);
        Ok(self)
    }
}

impl FromStr for TaskRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            |reason: &str| Error::InvalidTaskRef(InvalidTaskRef { input: excerpt(s, 80), reason: reason.to_string() });
        let (provider, rest) = s.split_once(':').ok_or_else(|| bad("expected `provider:id`"))?;
        let (id, query) = match rest.split_once('?') {
            Some((id, query)) => (id, Some(query)),
            None => (rest, None),
        };
        let decode = |part: &str| {
            percent_decode_str(part)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| bad("percent-encoding is not UTF-8"))
        };
        let mut task = TaskRef::new(provider, decode(id)?)?;
        // `provider:id?` and `a=1&&b=2` are refused: an empty part is a typo, never meant.
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            let (k, v) = pair.split_once('=').ok_or_else(|| bad("inputs must be `name=value`"))?;
            let name = decode(k)?;
            if task.inputs.contains_key(&name) {
                return Err(bad(&format!("input `{name}` is given twice")));
            }
            task = task.with_input(&name, decode(v)?)?;
        }
        Ok(task)
    }
}

impl<'de> Deserialize<'de> for TaskRef {
    /// Checks what [`TaskRef::new`] and [`TaskRef::with_input`] check.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = TaskRefFields::deserialize(deserializer)?;
        let mut task = TaskRef::new(&fields.provider, fields.id).map_err(serde::de::Error::custom)?;
        for (name, value) in fields.inputs {
            task = task.with_input(&name, value).map_err(serde::de::Error::custom)?;
        }
        Ok(task)
    }
}

impl Task {
    /// The body as a provider's generated type, e.g.
    /// `task.typed::<taskpoll::generated::deepomatic::types::Task>()?`. A body
    /// that does not read as `T` is [`Error::TypedBody`], which says where
    /// in the body serde stopped and why.
    pub fn typed<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_path_to_error::deserialize(self.body()).map_err(|e| {
            let path = e.path().to_string();
            Error::TypedBody(TypedBody {
                task: excerpt(&self.task_ref().to_string(), 120),
                type_name: std::any::type_name::<T>(),
                path,
                message: excerpt(&e.into_inner().to_string(), 300),
            })
        })
    }
}
