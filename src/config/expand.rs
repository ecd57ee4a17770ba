//! `${VAR}` substitution applied to a parsed TOML document: `check` finds every bad
//! reference with its span first, then `Expand` substitutes string values while serde
//! builds the typed file. Substitution happens after TOML parsing, on string values only
//! (never keys, never the source text), so a variable's value cannot inject TOML.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::env::{substitute, Vars};
use super::Problem;

/// Every string value of `doc` that cannot be substituted, as problems with their spans.
pub fn check(doc: &toml_edit::ImDocument<&str>, vars: &Vars) -> Vec<Problem> {
    let mut problems = Vec::new();
    walk_table(doc.as_table(), vars, "", &mut problems);
    problems
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn walk_table(t: &toml_edit::Table, vars: &Vars, path: &str, out: &mut Vec<Problem>) {
    for (k, item) in t.iter() {
        walk_item(item, vars, &join(path, k), out);
    }
}

fn walk_item(item: &toml_edit::Item, vars: &Vars, path: &str, out: &mut Vec<Problem>) {
    match item {
        toml_edit::Item::Value(v) => walk_value(v, vars, path, out),
        toml_edit::Item::Table(t) => walk_table(t, vars, path, out),
        toml_edit::Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                walk_table(t, vars, &format!("{path}[{i}]"), out);
            }
        }
        toml_edit::Item::None => {}
    }
}

fn walk_value(v: &toml_edit::Value, vars: &Vars, path: &str, out: &mut Vec<Problem>) {
    match v {
        toml_edit::Value::String(s) => {
            if let Err(e) = substitute(s.value(), vars) {
                out.push(Problem {
                    span: s.span(),
                    path: path.to_string(),
                    message: e.message,
                    hint: Some(e.hint),
                });
            }
        }
        toml_edit::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                walk_value(v, vars, &format!("{path}[{i}]"), out);
            }
        }
        toml_edit::Value::InlineTable(t) => {
            for (k, v) in t.iter() {
                walk_value(v, vars, &join(path, k), out);
            }
        }
        _ => {}
    }
}

// === impl Expand ===

/// A deserializer that hands every string value through `substitute`; map keys are left
/// as written. Everything else is passed to the inner (TOML) deserializer unchanged, so
/// `Spanned` values keep their spans.
pub struct Expand<'v, D> {
    inner: D,
    vars: &'v Vars,
}

impl<'v, D> Expand<'v, D> {
    pub fn new(inner: D, vars: &'v Vars) -> Self {
        Expand { inner, vars }
    }
}

struct Wrap<'v, T> {
    inner: T,
    vars: &'v Vars,
}

/// Passes a map key through untouched (keys are names, not values).
struct Key<T>(T);

macro_rules! forward {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method(Wrap { inner: visitor, vars: self.vars })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Expand<'_, D> {
    type Error = D::Error;

    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_struct(name, fields, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_enum(name, variants, visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

impl<'v, D> Expand<'v, D> {
    fn wrap<T>(&self, inner: T) -> Wrap<'v, T> {
        Wrap {
            inner,
            vars: self.vars,
        }
    }
}

impl<'v, T> Wrap<'v, T> {
    fn with<U>(&self, inner: U) -> Wrap<'v, U> {
        Wrap {
            inner,
            vars: self.vars,
        }
    }
}

macro_rules! pass {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.expecting(f)
    }

    pass!(
        visit_bool: bool,
        visit_i8: i8,
        visit_i16: i16,
        visit_i32: i32,
        visit_i64: i64,
        visit_i128: i128,
        visit_u8: u8,
        visit_u16: u16,
        visit_u32: u32,
        visit_u64: u64,
        visit_u128: u128,
        visit_f32: f32,
        visit_f64: f64,
        visit_char: char,
        visit_bytes: &[u8],
        visit_borrowed_bytes: &'de [u8],
        visit_byte_buf: Vec<u8>
    );

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        match substitute(v, self.vars) {
            Ok(std::borrow::Cow::Borrowed(s)) => self.inner.visit_str(s),
            Ok(std::borrow::Cow::Owned(s)) => self.inner.visit_string(s),
            Err(e) => Err(E::custom(format!("{}; hint: {}", e.message, e.hint))),
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        match substitute(v, self.vars) {
            Ok(std::borrow::Cow::Borrowed(s)) => self.inner.visit_borrowed_str(s),
            Ok(std::borrow::Cow::Owned(s)) => self.inner.visit_string(s),
            Err(e) => Err(E::custom(format!("{}; hint: {}", e.message, e.hint))),
        }
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        match substitute(&v, self.vars) {
            Ok(std::borrow::Cow::Borrowed(_)) => self.inner.visit_string(v),
            Ok(std::borrow::Cow::Owned(s)) => self.inner.visit_string(s),
            Err(e) => Err(E::custom(format!("{}; hint: {}", e.message, e.hint))),
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let vars = self.vars;
        self.inner.visit_some(Expand::new(d, vars))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let vars = self.vars;
        self.inner.visit_newtype_struct(Expand::new(d, vars))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let seq = self.with(seq);
        self.inner.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let map = self.with(map);
        self.inner.visit_map(map)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let data = self.with(data);
        self.inner.visit_enum(data)
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Wrap<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Expand::new(d, self.vars))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Key<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(d)
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Wrap<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let seed = self.with(seed);
        self.inner.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Wrap<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.inner.next_key_seed(Key(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.with(seed);
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, 'v, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Wrap<'v, A> {
    type Error = A::Error;
    type Variant = Wrap<'v, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        // The variant's name is a name, like a key: not substituted.
        let vars = self.vars;
        let (value, variant) = self.inner.variant_seed(Key(seed))?;
        Ok((
            value,
            Wrap {
                inner: variant,
                vars,
            },
        ))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Wrap<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.with(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = self.with(visitor);
        self.inner.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = self.with(visitor);
        self.inner.struct_variant(fields, visitor)
    }
}
