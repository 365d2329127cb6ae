//! `#[module(..)]` attributes on fields and on the struct, with the span of each kept for
//! error messages.

use crate::ctxt::Ctxt;
use proc_macro2::Span;

/// What `#[module(..)]` says about one field.
#[derive(Default)]
pub struct FieldAttrs {
    /// `#[module(skip)]`: not registered.
    pub skip: Option<Span>,
    /// `#[module(rename = "name")]`: the key segment instead of the field name.
    pub rename: Option<(String, syn::LitStr)>,
    /// `#[module(training)]`: the `bool` that `train()`/`eval()` set.
    pub training: Option<Span>,
}

/// What `#[module(..)]` says about the struct.
#[derive(Default)]
pub struct ContainerAttrs {
    /// `#[module(extra_repr = "path")]`: a `fn(&Self) -> String` for the printed form.
    pub extra_repr: Option<syn::ExprPath>,
}

const FIELD_EXPECTED: &str = "expected `skip`, `rename = \"...\"` or `training`";

/// Reads the `#[module(..)]` attributes of a field.
pub fn field_attrs(cx: &Ctxt, attrs: &[syn::Attribute]) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("module")) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                out.skip = Some(span_of(&meta.path));
            } else if meta.path.is_ident("training") {
                out.training = Some(span_of(&meta.path));
            } else if meta.path.is_ident("rename") {
                if let Some(lit) =
                    string_value(cx, &meta, "rename", "#[module(rename = \"name\")]")?
                {
                    out.rename = Some((lit.value(), lit));
                }
            } else {
                cx.error_at(&meta.path, unknown(&meta.path, FIELD_EXPECTED));
                skip_value(&meta)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            cx.syn_error(e);
        }
    }
    out
}

/// Reads the `#[module(..)]` attributes of the struct.
pub fn container_attrs(cx: &Ctxt, attrs: &[syn::Attribute]) -> ContainerAttrs {
    let mut out = ContainerAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("module")) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("extra_repr") {
                let example = "#[module(extra_repr = \"Self::describe\")]";
                if let Some(lit) = string_value(cx, &meta, "extra_repr", example)? {
                    match lit.parse::<syn::ExprPath>() {
                        Ok(path) => out.extra_repr = Some(path),
                        Err(_) => cx.error_at(
                            &lit,
                            "`extra_repr` must name a function path such as \"Self::describe\"",
                        ),
                    }
                }
            } else {
                let expected = "expected `extra_repr = \"...\"` on the struct (`skip`, `rename` \
                                and `training` go on fields)";
                cx.error_at(&meta.path, unknown(&meta.path, expected));
                skip_value(&meta)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            cx.syn_error(e);
        }
    }
    out
}

fn unknown(path: &syn::Path, expected: &str) -> String {
    let name = path
        .get_ident()
        .map_or_else(|| "?".to_string(), ToString::to_string);
    format!("unknown module attribute `{name}`; {expected}")
}

/// The string of `key = "..."`; an error at the key (no value) or at the value (not a
/// string) otherwise.
fn string_value(
    cx: &Ctxt,
    meta: &syn::meta::ParseNestedMeta<'_>,
    key: &str,
    example: &str,
) -> syn::Result<Option<syn::LitStr>> {
    if !meta.input.peek(syn::Token![=]) {
        cx.error_at(&meta.path, format!("`{key}` needs a string: `{example}`"));
        return Ok(None);
    }
    let value: syn::Expr = meta.value()?.parse()?;
    if let syn::Expr::Lit(syn::ExprLit {
        lit: syn::Lit::Str(s),
        ..
    }) = &value
    {
        return Ok(Some(s.clone()));
    }
    cx.error_at(&value, format!("`{key}` needs a string: `{example}`"));
    Ok(None)
}

/// Consumes `= value` or `(..)` after an unknown key so that parsing can go on.
fn skip_value(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        let _: proc_macro2::TokenStream = content.parse()?;
    }
    Ok(())
}

fn span_of(path: &syn::Path) -> Span {
    path.segments
        .first()
        .map_or_else(Span::call_site, |s| s.ident.span())
}
