//! [`ModuleInput`] → `impl Module` and `impl Display`, or on error the combined
//! `compile_error!` next to a fallback impl (so uses of the type raise no follow-up errors).

use crate::parse::{Field, Kind, Leaf, ModuleInput};
use proc_macro2::{TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use std::collections::HashSet;
use syn::DeriveInput;
use syn::spanned::Spanned;

/// The whole derive: parse → validate → expand.
pub fn derive(input: &DeriveInput) -> TokenStream {
    match try_expand(input) {
        Ok(tokens) => tokens,
        Err(error) => {
            let mut tokens = error.to_compile_error();
            tokens.extend(fallback(input));
            tokens
        }
    }
}

fn try_expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let input = ModuleInput::from_syn(input)?;
    input.validate()?;
    Ok(expand(&input))
}

fn expand(input: &ModuleInput<'_>) -> TokenStream {
    let ident = input.ident;
    let class_name = ident.to_string();
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut where_clause = where_clause
        .cloned()
        .unwrap_or_else(|| syn::parse_quote!(where));
    where_clause.predicates.extend(bounds(input));
    let registered: Vec<&Field<'_>> = input
        .fields
        .iter()
        .filter(|f| f.attrs.skip.is_none() && f.attrs.training.is_none())
        .collect();
    let visits = registered.iter().map(|f| visit_field(f, false));
    let visits_mut = registered.iter().map(|f| visit_field(f, true));
    let training = training_methods(input);
    let extra_repr = input.attrs.extra_repr.as_ref().map(|path| {
        quote! {
            fn extra_repr(&self) -> ::std::string::String {
                #path(self)
            }
        }
    });
    quote! {
        #[automatically_derived]
        impl #impl_generics ::torchlet::nn::Module for #ident #ty_generics #where_clause {
            fn class_name(&self) -> &'static str {
                #class_name
            }

            fn visit<'__a>(
                &'__a self,
                __f: &mut dyn ::core::ops::FnMut(&str, ::torchlet::nn::Member<'__a>),
            ) {
                #(#visits)*
            }

            fn visit_mut<'__a>(
                &'__a mut self,
                __f: &mut dyn ::core::ops::FnMut(&str, ::torchlet::nn::MemberMut<'__a>),
            ) {
                #(#visits_mut)*
            }

            fn as_dyn(&self) -> &dyn ::torchlet::nn::Module {
                self
            }

            fn as_dyn_mut(&mut self) -> &mut dyn ::torchlet::nn::Module {
                self
            }

            #training
            #extra_repr
        }

        #[automatically_derived]
        impl #impl_generics ::core::fmt::Display for #ident #ty_generics #where_clause {
            fn fmt(&self, __f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::torchlet::nn::fmt_module(self, __f)
            }
        }
    }
}

/// One call of the visitor for a field; a submodule is coerced to `&dyn Module` with the
/// span of its type, so a type that is not a module is reported at the field.
fn visit_field(field: &Field<'_>, mutable: bool) -> TokenStream {
    let member = &field.member;
    let name = &field.name;
    let (member_ty, borrow) = if mutable {
        (quote!(::torchlet::nn::MemberMut), quote!(&mut))
    } else {
        (quote!(::torchlet::nn::Member), quote!(&))
    };
    let variant = |leaf: Leaf, value: TokenStream| match leaf {
        Leaf::Parameter => quote!(#member_ty::Parameter(#value)),
        Leaf::Buffer => quote!(#member_ty::Buffer(#value)),
        Leaf::Module => quote_spanned!(field.ty.span()=> #member_ty::Module(#value)),
    };
    match field.kind {
        Kind::Parameter => {
            let v = variant(Leaf::Parameter, quote!(#borrow self.#member));
            quote!(__f(#name, #v);)
        }
        Kind::Buffer => {
            let v = variant(Leaf::Buffer, quote!(#borrow self.#member));
            quote!(__f(#name, #v);)
        }
        Kind::Module | Kind::Plain => {
            // `<Ty as Module>::as_dyn` names the field's own type tokens, so a type that is
            // not a module is reported once, at the field (both visits give the same error,
            // which rustc prints once).
            let ty = field.ty;
            let method = if mutable {
                quote!(as_dyn_mut)
            } else {
                quote!(as_dyn)
            };
            let value = quote_spanned!(ty.span()=> <#ty as ::torchlet::nn::Module>::#method(#borrow self.#member));
            quote!(__f(#name, #member_ty::Module(#value));)
        }
        Kind::Optional(leaf) => {
            let v = variant(leaf, quote!(__v));
            quote! {
                if let ::core::option::Option::Some(__v) = #borrow self.#member {
                    __f(#name, #v);
                }
            }
        }
    }
}

fn training_methods(input: &ModuleInput<'_>) -> Option<TokenStream> {
    let field = input.fields.iter().find(|f| f.attrs.training.is_some())?;
    let member = &field.member;
    Some(quote! {
        fn training_flag(&self) -> ::core::option::Option<bool> {
            ::core::option::Option::Some(self.#member)
        }

        fn set_training_flag(&mut self, __training: bool) {
            self.#member = __training;
        }
    })
}

/// `Ty: Module` for each submodule field whose type mentions a type parameter (serde's
/// approach: bound what is used, not every parameter).
fn bounds(input: &ModuleInput<'_>) -> Vec<syn::WherePredicate> {
    let params: HashSet<String> = input
        .generics
        .type_params()
        .map(|p| p.ident.to_string())
        .collect();
    if params.is_empty() {
        return Vec::new();
    }
    input
        .fields
        .iter()
        .filter(|f| f.attrs.skip.is_none() && f.attrs.training.is_none())
        .filter_map(|f| match f.kind {
            Kind::Module => Some(f.ty.clone()),
            Kind::Optional(Leaf::Module) => option_inner(f.ty),
            _ => None,
        })
        .filter(|ty| mentions(ty.to_token_stream(), &params))
        .map(|ty| syn::parse_quote!(#ty: ::torchlet::nn::Module))
        .collect()
}

fn option_inner(ty: &syn::Type) -> Option<syn::Type> {
    let syn::Type::Path(p) = ty else { return None };
    let syn::PathArguments::AngleBracketed(args) = &p.path.segments.last()?.arguments else {
        return None;
    };
    match args.args.first()? {
        syn::GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    }
}

fn mentions(tokens: TokenStream, params: &HashSet<String>) -> bool {
    tokens.into_iter().any(|t| match t {
        TokenTree::Ident(i) => params.contains(&i.to_string()),
        TokenTree::Group(g) => mentions(g.stream(), params),
        _ => false,
    })
}

/// An impl with the right signatures and unreachable bodies, emitted next to the errors.
fn fallback(input: &DeriveInput) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        #[automatically_derived]
        impl #impl_generics ::torchlet::nn::Module for #ident #ty_generics #where_clause {
            fn class_name(&self) -> &'static str {
                ::core::unreachable!()
            }

            fn visit<'__a>(
                &'__a self,
                __f: &mut dyn ::core::ops::FnMut(&str, ::torchlet::nn::Member<'__a>),
            ) {
                ::core::unreachable!()
            }

            fn visit_mut<'__a>(
                &'__a mut self,
                __f: &mut dyn ::core::ops::FnMut(&str, ::torchlet::nn::MemberMut<'__a>),
            ) {
                ::core::unreachable!()
            }

            fn as_dyn(&self) -> &dyn ::torchlet::nn::Module {
                ::core::unreachable!()
            }

            fn as_dyn_mut(&mut self) -> &mut dyn ::torchlet::nn::Module {
                ::core::unreachable!()
            }
        }

        #[automatically_derived]
        impl #impl_generics ::core::fmt::Display for #ident #ty_generics #where_clause {
            fn fmt(&self, __f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::unreachable!()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(src: &str) -> String {
        let input: DeriveInput = syn::parse_str(src).unwrap();
        derive(&input).to_string()
    }

    #[test]
    fn generated_code_uses_absolute_paths_and_bounds_generic_fields() {
        let out =
            expand_str("struct W<M> { inner: M, scale: Parameter, #[module(skip)] n: usize }");
        assert!(
            out.contains(":: torchlet :: nn :: Module for W < M >"),
            "{out}"
        );
        assert!(out.contains("M : :: torchlet :: nn :: Module"), "{out}");
        assert!(out.contains("\"scale\""), "{out}");
        assert!(!out.contains("\"n\""), "{out}");
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn errors_come_with_a_fallback_impl() {
        let out = expand_str("enum E { A }");
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("unreachable"), "{out}");
    }
}
