//! Checks on a parsed struct that need more than one token: every problem is collected and
//! reported together, each at the token to change.

use crate::ctxt::Ctxt;
use crate::parse::{Field, Kind, Leaf, ModuleInput};
use quote::ToTokens;
use std::collections::HashMap;

impl ModuleInput<'_> {
    /// Every error in the fields, combined.
    pub fn validate(&self) -> syn::Result<()> {
        let cx = Ctxt::default();
        let mut seen: HashMap<&str, &Field<'_>> = HashMap::new();
        let mut training: Option<&Field<'_>> = None;
        for field in &self.fields {
            check_field(&cx, field);
            if field.attrs.training.is_some() {
                if let (Some(first), Some(span)) = (training, field.attrs.training) {
                    cx.error_span(
                        span,
                        format!(
                            "only one field can be `#[module(training)]`; `{}` already is",
                            first.name
                        ),
                    );
                }
                training = Some(field);
                continue;
            }
            if field.attrs.skip.is_some() {
                continue;
            }
            if let Some(first) = seen.insert(&field.name, field) {
                let message = format!(
                    "two fields are registered as `{}`; rename one with \
                     `#[module(rename = \"...\")]`",
                    first.name
                );
                match &field.attrs.rename {
                    Some((_, lit)) => cx.error_at(lit, message),
                    None => cx.error_at(&field.member, message),
                }
            }
        }
        cx.check()
    }
}

/// The rules for one field: what may be skipped, renamed or marked as the training flag.
fn check_field(cx: &Ctxt, field: &Field<'_>) {
    let attrs = &field.attrs;
    if let Some(span) = attrs.training {
        if !matches!(field.ty, syn::Type::Path(p) if p.path.is_ident("bool")) {
            cx.error_span(span, "`#[module(training)]` goes on a `bool` field");
        }
        if attrs.skip.is_some() || attrs.rename.is_some() {
            cx.error_span(
                span,
                "a `#[module(training)]` field is not registered: leave out `skip` and `rename`",
            );
        }
        return;
    }
    if let Some((name, lit)) = &attrs.rename {
        if name.is_empty() || name.contains('.') {
            cx.error_at(
                lit,
                "a module name cannot be empty or contain `.`: keys are dot-joined",
            );
        }
        if attrs.skip.is_some() {
            cx.error_at(
                lit,
                "a skipped field has no name to rename; remove `rename` or `skip`",
            );
        }
    }
    match (field.kind, attrs.skip) {
        (Kind::Parameter | Kind::Optional(Leaf::Parameter), Some(span)) => cx.error_span(
            span,
            "a `Parameter` cannot be skipped: it would be neither trained nor saved; make it a \
             `Buffer` to save it without training, or freeze it with `requires_grad_(false)`",
        ),
        (Kind::Buffer | Kind::Optional(Leaf::Buffer), Some(span)) => cx.error_span(
            span,
            "a `Buffer` cannot be skipped: it would not be saved; hold a plain `Tensor` instead",
        ),
        (Kind::Plain, None) => cx.error_at(field.ty, plain_message(field)),
        _ => {}
    }
}

/// A type as written, without the spaces `to_string` puts between tokens.
fn type_text(ty: &syn::Type) -> String {
    let mut s = ty.to_token_stream().to_string();
    for (from, to) in [
        (" < ", "<"),
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" :: ", "::"),
        (":: ", "::"),
        (" ,", ","),
        ("& ", "&"),
        ("[ ", "["),
        (" ]", "]"),
        (" ;", ";"),
    ] {
        s = s.replace(from, to);
    }
    s
}

fn plain_message(field: &Field<'_>) -> String {
    let ty = type_text(field.ty);
    if let Some(list) = tensor_list(&ty) {
        let params = list.replace("Tensor", "Parameter");
        let buffers = list.replace("Tensor", "Buffer");
        return format!(
            "field `{}` holds plain `Tensor`s, which a module does not register; make it \
             `{params}` (trained and saved, PyTorch's `ParameterList`) or `{buffers}` (saved, \
             not trained), or mark it `#[module(skip)]`",
            field.name
        );
    }
    if ty == "Tensor" || ty.ends_with("::Tensor") {
        return format!(
            "field `{}` is a plain `Tensor`, which a module does not register; make it a \
             `Parameter` (trained and saved) or a `Buffer` (saved, not trained), or mark it \
             `#[module(skip)]`",
            field.name
        );
    }
    format!(
        "field `{}` of type `{ty}` is not a Module, Parameter or Buffer; mark it \
         `#[module(skip)]` to keep it out of the module's registry",
        field.name
    )
}

/// `ty` with its element spelled `Tensor` when it is a list of tensors (`Vec<Tensor>`,
/// `[Tensor; 4]`, `Vec<torchlet::Tensor>`).
fn tensor_list(ty: &str) -> Option<String> {
    let inner = ty
        .strip_prefix("Vec<")
        .and_then(|t| t.strip_suffix('>'))
        .or_else(|| {
            ty.strip_prefix('[')
                .and_then(|t| t.split_once(';'))
                .map(|t| t.0)
        })?;
    let is_tensor = inner == "Tensor" || inner.ends_with("::Tensor");
    is_tensor.then(|| ty.replacen(inner, "Tensor", 1))
}

#[cfg(test)]
mod tests {
    use crate::parse::ModuleInput;

    fn errors(src: &str) -> Option<String> {
        let input: syn::DeriveInput = syn::parse_str(src).unwrap();
        let parsed = ModuleInput::from_syn(&input).unwrap();
        parsed.validate().err().map(|e| e.to_string())
    }

    #[test]
    fn valid_structs_pass() {
        for src in [
            "struct S { w: Parameter, b: Option<Parameter>, l: Linear, #[module(skip)] n: usize }",
            "struct S { #[module(training)] training: bool, layers: Vec<Linear> }",
            "struct S<M> { inner: M, #[module(rename = \"head\")] out: Option<M> }",
            "struct S(Linear, Buffer);",
            "struct S;",
        ] {
            assert_eq!(errors(src), None, "{src}");
        }
    }

    #[test]
    fn mistakes_are_reported_with_the_fix() {
        let cases = [
            ("struct S { n: usize }", "mark it `#[module(skip)]`"),
            ("struct S { t: Tensor }", "make it a `Parameter`"),
            (
                "struct S { extra: Vec<Tensor> }",
                "make it `Vec<Parameter>` (trained and saved, PyTorch's `ParameterList`)",
            ),
            (
                "struct S { extra: [torchlet::Tensor; 2] }",
                "make it `[Parameter; 2]`",
            ),
            (
                "struct S { ids: Vec<usize> }",
                "of type `Vec<usize>` is not a Module",
            ),
            (
                "struct S { #[module(skip)] w: Parameter }",
                "cannot be skipped",
            ),
            (
                "struct S { #[module(skip)] b: Buffer }",
                "cannot be skipped",
            ),
            (
                "struct S { #[module(training)] t: u8 }",
                "on a `bool` field",
            ),
            (
                "struct S { a: Linear, #[module(rename = \"a\")] b: Linear }",
                "two fields",
            ),
            (
                "struct S { #[module(rename = \"a.b\")] b: Linear }",
                "contain `.`",
            ),
        ];
        for (src, want) in cases {
            let got = errors(src).unwrap_or_default();
            assert!(got.contains(want), "{src}: {got}");
        }
    }
}
