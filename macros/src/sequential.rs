//! `sequential![..]`: the grammar (`layer, …` or `label = layer, …`), a check of literal
//! sizes between neighbouring layers, and the expansion to a typed `Sequential<(A, B, …)>`
//! in which each layer passes through a check spanned at the layer (see
//! `torchlet::nn::probe`), so that a layer that is not one is reported where it is written.

use crate::ctxt::Ctxt;
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Token};

/// `torchlet::nn::MAX_LAYERS`: the longest flat tuple the chain impls are generated for.
const MAX_LAYERS: usize = 64;

/// One entry: a layer and its optional label.
struct Item {
    label: Option<syn::Ident>,
    layer: Expr,
}

struct Items(Punctuated<Item, Token![,]>);

impl Parse for Item {
    fn parse(input: ParseStream<'_>) -> syn::Result<Item> {
        let label = if input.peek(syn::Ident) && input.peek2(Token![=]) {
            let label = input.parse()?;
            input.parse::<Token![=]>()?;
            Some(label)
        } else {
            None
        };
        Ok(Item {
            label,
            layer: input.parse()?,
        })
    }
}

impl Parse for Items {
    fn parse(input: ParseStream<'_>) -> syn::Result<Items> {
        Ok(Items(Punctuated::parse_terminated(input)?))
    }
}

/// The whole macro: parse → validate → expand; an error comes with a placeholder value of
/// type `!`, so the code around the macro raises no follow-up errors.
pub fn expand(input: TokenStream) -> TokenStream {
    let items = match syn::parse2::<Items>(input) {
        Ok(items) => items,
        Err(e) => return with_error(e, None),
    };
    let items: Vec<Item> = items.0.into_iter().collect();
    if items.is_empty() {
        // No chain to build: a placeholder of type `!` keeps the surrounding code quiet.
        return with_error(syn::Error::new(Span::call_site(), EMPTY), None);
    }
    if let Some(item) = items.get(MAX_LAYERS) {
        // Past the longest chain there is no type to build: the placeholder stands in, after
        // the layers, which are still evaluated so that their imports count as used.
        let layers = items.iter().map(|i| &i.layer);
        let value = quote!({
            let _ = (#(#layers,)*);
            ::core::unreachable!()
        });
        return with_error(
            syn::Error::new_spanned(&item.layer, too_long()),
            Some(value),
        );
    }
    let chain = chain(&items);
    match validate(&items) {
        Ok(()) => chain,
        Err(e) => with_error(e, Some(chain)),
    }
}

/// `{ let __l0 = a; let __l0 = check(__l0); …; Sequential::from_layers((__l0, …), names) }`:
/// each check is written with the layer's span, so its error points at the layer.
fn chain(items: &[Item]) -> TokenStream {
    let locals: Vec<syn::Ident> = (0..items.len())
        .map(|i| format_ident!("__l{}", i))
        .collect();
    let checks = items.iter().zip(&locals).map(|(item, local)| {
        let layer = &item.layer;
        let check = quote_spanned! {layer.span()=>
            (&&&&::torchlet::nn::probe::Probe::of(&#local)).__check(#local)
        };
        quote! {
            let #local = #layer;
            #[allow(clippy::needless_borrow)]
            let #local = #check;
        }
    });
    let names = items.iter().enumerate().map(|(i, item)| match &item.label {
        Some(label) => label.to_string(),
        None => i.to_string(),
    });
    quote! {{
        #[allow(unused_imports)]
        use ::torchlet::nn::probe::{
            ModuleOnly as _, NotModule as _, OtherLayer as _, TensorLayer as _,
        };
        #(#checks)*
        ::torchlet::nn::Sequential::from_layers((#(#locals,)*), &[#(#names),*])
    }}
}

fn with_error(error: syn::Error, value: Option<TokenStream>) -> TokenStream {
    let error = error.to_compile_error();
    let value = value.unwrap_or_else(|| quote!(::core::unreachable!()));
    quote! {{
        #error
        #value
    }}
}

const EMPTY: &str = "sequential! needs at least one layer, as in \
                     `sequential![Linear::new(784, 128), ReLU]`; for a chain built at run time \
                     use `Sequential::new()` and `push`";

/// The message at the first layer past [`MAX_LAYERS`].
fn too_long() -> String {
    format!(
        "sequential! takes at most {MAX_LAYERS} layers and this is layer {MAX_LAYERS} (counting \
         from 0); nest chains, as in `sequential![sequential![…], sequential![…]]`, or build a \
         run-time chain with `Sequential::new()` and `push`"
    )
}

fn validate(items: &[Item]) -> syn::Result<()> {
    let cx = Ctxt::default();
    if items.is_empty() {
        cx.error_span(Span::call_site(), EMPTY);
    }
    let mut labels: Vec<&syn::Ident> = Vec::new();
    for label in items.iter().filter_map(|i| i.label.as_ref()) {
        if labels.contains(&label) {
            cx.error_at(
                label,
                format!("two layers are labelled `{label}`; labels name children and must differ"),
            );
        }
        labels.push(label);
    }
    check_sizes(&cx, items);
    cx.check()
}

/// What a layer written with literal sizes says about the size it takes and gives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Axis {
    /// The last dimension (Linear).
    Features,
    /// Dimension 1 of `[N, C, H, W]` (Conv2d, BatchNorm2d).
    Channels,
    /// Dimension 1, whichever it is (BatchNorm1d on `[N, C]` or `[N, C, L]`).
    Either,
}

struct Sizes<'e> {
    axis: Axis,
    input: Option<(u64, &'e syn::LitInt)>,
    output: Option<u64>,
}

/// Compares each layer's literal input size with the previous layer's literal output size,
/// through layers that keep the size (activations, pooling, dropout).
fn check_sizes(cx: &Ctxt, items: &[Item]) {
    let mut current: Option<(u64, Axis, usize)> = None;
    for (index, item) in items.iter().enumerate() {
        let Some(name) = constructor(&item.layer) else {
            current = None;
            continue;
        };
        if PRESERVING.contains(&name.0.as_str()) {
            continue;
        }
        let Some(sizes) = sizes(&name.0, name.1) else {
            current = None;
            continue;
        };
        if let (Some((have, axis, from)), Some((want, lit))) = (current, sizes.input) {
            let fits = axis == sizes.axis || axis == Axis::Either || sizes.axis == Axis::Either;
            if fits && have != want {
                let prev = items[from]
                    .layer
                    .to_token_stream()
                    .to_string()
                    .replace(" :: ", "::")
                    .replace(" (", "(")
                    .replace(" . ", ".");
                cx.error_at(
                    lit,
                    format!(
                        "layer {index} takes {want} but layer {from} (`{prev}`) gives {have}; \
                         make these sizes equal"
                    ),
                );
            }
        }
        current = sizes.output.map(|o| (o, sizes.axis, index));
    }
}

/// Layers that give what they take along the tracked axis.
const PRESERVING: &[&str] = &[
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "GELU",
    "Softmax",
    "LogSoftmax",
    "Dropout",
    "Identity",
    "MaxPool2d",
    "AvgPool2d",
];

fn sizes<'e>(name: &str, args: Option<&'e Punctuated<Expr, Token![,]>>) -> Option<Sizes<'e>> {
    let lit = |i: usize| -> Option<(u64, &'e syn::LitInt)> {
        match args?.iter().nth(i)? {
            Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Int(l),
                ..
            }) => Some((l.base10_parse().ok()?, l)),
            _ => None,
        }
    };
    let (axis, input, output) = match name {
        "Linear" => (Axis::Features, lit(0), lit(1).map(|l| l.0)),
        "Conv2d" => (Axis::Channels, lit(0), lit(1).map(|l| l.0)),
        "BatchNorm2d" => (Axis::Channels, lit(0), lit(0).map(|l| l.0)),
        "BatchNorm1d" => (Axis::Either, lit(0), lit(0).map(|l| l.0)),
        "LayerNorm" => (Axis::Features, lit(0), lit(0).map(|l| l.0)),
        _ => return None,
    };
    Some(Sizes {
        axis,
        input,
        output,
    })
}

/// `(Type, args)` for `Type`, `Type::new(args)` or `Type::new(args).with_x(..)…`.
fn constructor(expr: &Expr) -> Option<(String, Option<&Punctuated<Expr, Token![,]>>)> {
    match expr {
        Expr::Path(p) => Some((p.path.segments.last()?.ident.to_string(), None)),
        Expr::MethodCall(m) => constructor(&m.receiver),
        Expr::Call(call) => {
            let Expr::Path(p) = &*call.func else {
                return None;
            };
            let segments: Vec<_> = p.path.segments.iter().collect();
            let ty = segments.len().checked_sub(2).map(|i| segments[i])?;
            Some((ty.ident.to_string(), Some(&call.args)))
        }
        Expr::Paren(p) => constructor(&p.expr),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(src: &str) -> Option<String> {
        let items: Items = syn::parse_str(src).unwrap();
        let items: Vec<Item> = items.0.into_iter().collect();
        validate(&items).err().map(|e| e.to_string())
    }

    #[test]
    fn literal_sizes_are_checked_through_size_keeping_layers() {
        assert_eq!(
            check("Linear::new(784, 128), ReLU, Linear::new(128, 10)"),
            None
        );
        assert_eq!(
            check("fc1 = Linear::new(784, 128), act = ReLU, fc2 = Linear::new(128, 10)"),
            None
        );
        assert_eq!(
            check(
                "Conv2d::new(1, 4, 3).with_padding(1), BatchNorm2d::new(4), ReLU, MaxPool2d::new(2)"
            ),
            None
        );
        assert_eq!(
            check("Conv2d::new(1, 4, 3), Flatten::new(), Linear::new(36, 10)"),
            None
        );
        assert_eq!(check("Linear::new(4, n), ReLU, Linear::new(8, 2)"), None);
        let err = check("Linear::new(784, 128), ReLU, Linear::new(64, 10)").unwrap();
        assert!(err.contains("layer 2 takes 64 but layer 0"), "{err}");
        let err = check("Conv2d::new(1, 4, 3), BatchNorm2d::new(8)").unwrap();
        assert!(err.contains("takes 8"), "{err}");
    }

    #[test]
    fn empty_chains_and_repeated_labels_are_refused() {
        assert!(check("").unwrap().contains("at least one layer"));
        assert!(
            check("a = ReLU, a = Tanh")
                .unwrap()
                .contains("labelled `a`")
        );
    }

    #[test]
    fn chains_longer_than_max_layers_are_refused_at_the_first_extra_layer() {
        let layers = vec!["ReLU"; MAX_LAYERS].join(", ");
        let out = expand(syn::parse_str(&layers).unwrap()).to_string();
        assert!(!out.contains("compile_error"), "{out}");
        let out = expand(syn::parse_str(&format!("{layers}, Tanh")).unwrap()).to_string();
        assert!(out.contains("at most 64 layers"), "{out}");
        assert!(!out.contains("from_layers"), "{out}");
    }

    #[test]
    fn each_layer_passes_through_the_probe() {
        let out = expand(quote!(Linear::new(2, 3), ReLU)).to_string();
        assert!(out.contains("let __l1 = ReLU"), "{out}");
        assert!(
            out.contains("Probe :: of (& __l1)) . __check (__l1)"),
            "{out}"
        );
        assert!(out.contains("from_layers ((__l0 , __l1 ,)"), "{out}");
    }

    #[test]
    fn labels_become_child_names() {
        let out = expand(quote!(fc1 = Linear::new(2, 3), ReLU)).to_string();
        assert!(out.contains("\"fc1\" , \"1\""), "{out}");
    }
}
