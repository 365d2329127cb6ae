//! Every differentiable op against central finite differences (f64, PyTorch's gradcheck
//! defaults), including broadcast inputs and an input used more than once.

use torchlet::autograd::{GradcheckOptions, gradcheck, gradcheck_with};
use torchlet::{Tensor, manual_seed};

/// A random f64 leaf that requires grad, with values in `[lo, hi)`.
fn input(shape: &[usize], lo: f64, hi: f64) -> Tensor {
    let t = Tensor::rand(shape).double();
    (&(&t * (hi - lo)) + lo).detach().requires_grad_(true)
}

/// Values in `[0.2, 1)` with random signs: away from the kinks of relu, abs, clamp.
fn away_from_zero(shape: &[usize]) -> Tensor {
    let magnitude = Tensor::rand(shape).double().mul_scalar(0.8).add_scalar(0.2);
    let sign = Tensor::rand(shape)
        .gt_scalar(0.5)
        .double()
        .mul_scalar(2.0)
        .add_scalar(-1.0);
    (&magnitude * &sign).detach().requires_grad_(true)
}

#[track_caller]
fn check(f: impl Fn(&[Tensor]) -> Tensor, inputs: Vec<Tensor>) {
    if let Err(e) = gradcheck(f, &inputs) {
        panic!("{e}");
    }
}

#[test]
fn binary_ops_with_broadcasting() {
    manual_seed(0);
    for (sa, sb) in [
        (&[3usize, 4][..], &[3usize, 4][..]),
        (&[3, 4], &[4]),
        (&[2, 1, 4], &[3, 1]),
        (&[], &[2, 3]),
    ] {
        let a = input(sa, -1.0, 1.0);
        let b = input(sb, 0.5, 2.0);
        check(|v| &v[0] + &v[1], vec![a.clone(), b.clone()]);
        check(|v| &v[0] - &v[1], vec![a.clone(), b.clone()]);
        check(|v| &v[0] * &v[1], vec![a.clone(), b.clone()]);
        check(|v| &v[0] / &v[1], vec![a.clone(), b.clone()]);
    }
}

#[test]
fn scalar_ops() {
    manual_seed(1);
    let x = input(&[2, 3], 0.5, 2.0);
    check(|v| &v[0] * 3.0, vec![x.clone()]);
    check(|v| &v[0] + 3.0, vec![x.clone()]);
    check(|v| &v[0] - 3.0, vec![x.clone()]);
    check(|v| &v[0] / 3.0, vec![x.clone()]);
    check(|v| 2.0 / &v[0], vec![x.clone()]);
    check(|v| 2.0 - &v[0], vec![x]);
}

#[test]
fn unary_ops() {
    manual_seed(2);
    let x = input(&[3, 4], -2.0, 2.0);
    let pos = input(&[3, 4], 0.5, 2.0);
    let kinked = away_from_zero(&[3, 4]);
    check(|v| -&v[0], vec![x.clone()]);
    check(|v| v[0].exp(), vec![x.clone()]);
    check(|v| v[0].log(), vec![pos.clone()]);
    check(|v| v[0].sqrt(), vec![pos.clone()]);
    check(|v| v[0].pow(2.0), vec![x.clone()]);
    check(|v| v[0].pow(2.5), vec![pos.clone()]);
    check(|v| v[0].pow(-1.5), vec![pos]);
    check(|v| v[0].abs(), vec![kinked.clone()]);
    check(|v| v[0].relu(), vec![kinked.clone()]);
    check(|v| v[0].leaky_relu(0.01), vec![kinked.clone()]);
    check(|v| v[0].clamp(Some(-0.5), Some(0.5)), vec![kinked]);
    check(|v| v[0].sigmoid(), vec![x.clone()]);
    check(|v| v[0].tanh(), vec![x.clone()]);
    check(|v| v[0].gelu(), vec![x.clone()]);
    check(|v| v[0].gelu_tanh(), vec![x.clone()]);
    // Through f32 the differences need a coarser step.
    let coarse = GradcheckOptions {
        eps: 1e-3,
        atol: 1e-4,
        rtol: 1e-2,
    };
    let cast = |v: &[Tensor]| (&v[0].float() * &v[0].float()).double();
    gradcheck_with(cast, &[x], coarse).unwrap();
}

#[test]
fn matmul_in_every_form() {
    manual_seed(3);
    let cases: [(&[usize], &[usize]); 7] = [
        (&[3, 4], &[4, 5]),
        (&[2, 3, 4], &[2, 4, 5]),
        (&[2, 3, 4], &[4, 5]),
        (&[4, 5], &[2, 5, 3]),
        (&[2, 1, 3, 4], &[3, 4, 2]),
        (&[4], &[4, 3]),
        (&[4], &[4]),
    ];
    for (sa, sb) in cases {
        check(
            |v| v[0].matmul(&v[1]),
            vec![input(sa, -1.0, 1.0), input(sb, -1.0, 1.0)],
        );
    }
    check(
        |v| v[0].matmul(&v[1]),
        vec![input(&[3, 4], -1.0, 1.0), input(&[4], -1.0, 1.0)],
    );
    // Transposed (strided) operands, as Linear and backward produce them.
    check(
        |v| v[0].matmul(&v[1].t()),
        vec![input(&[3, 4], -1.0, 1.0), input(&[5, 4], -1.0, 1.0)],
    );
}

#[test]
fn linear_with_and_without_bias() {
    manual_seed(8);
    for x_shape in [&[5usize, 4][..], &[2, 3, 4], &[4]] {
        let x = input(x_shape, -1.0, 1.0);
        let w = input(&[3, 4], -1.0, 1.0);
        let b = input(&[3], -1.0, 1.0);
        check(
            |v| v[0].linear(&v[1], Some(&v[2])),
            vec![x.clone(), w.clone(), b],
        );
        check(|v| v[0].linear(&v[1], None), vec![x, w]);
    }
    // A transposed (strided) input.
    let xt = input(&[4, 5], -1.0, 1.0);
    let w = input(&[3, 4], -1.0, 1.0);
    check(|v| v[0].t().linear(&v[1], None), vec![xt, w]);
}

#[test]
fn reductions() {
    manual_seed(4);
    let x = input(&[2, 3, 4], -1.0, 1.0);
    check(|v| v[0].sum(), vec![x.clone()]);
    check(|v| v[0].sum_dim(1, false), vec![x.clone()]);
    check(|v| v[0].sum_dim(-1, true), vec![x.clone()]);
    check(|v| v[0].sum_dims(&[0, 2], false), vec![x.clone()]);
    check(|v| v[0].mean(), vec![x.clone()]);
    check(|v| v[0].mean_dim(1, true), vec![x.clone()]);
    check(|v| v[0].max_dim(1, false).0, vec![x.clone()]);
    check(|v| v[0].min_dim(0, true).0, vec![x.clone()]);
    check(|v| v[0].max(), vec![x]);
}

#[test]
fn softmax_family() {
    manual_seed(5);
    let x = input(&[3, 5], -3.0, 3.0);
    for dim in [0, 1, -1] {
        check(|v| v[0].softmax(dim), vec![x.clone()]);
        check(|v| v[0].log_softmax(dim), vec![x.clone()]);
    }
}

#[test]
fn shape_ops() {
    manual_seed(6);
    let x = input(&[2, 3, 4], -1.0, 1.0);
    check(|v| v[0].transpose(0, 2), vec![x.clone()]);
    check(|v| v[0].permute(&[2, 0, 1]), vec![x.clone()]);
    check(|v| v[0].reshape(&[4, -1]), vec![x.clone()]);
    check(|v| v[0].transpose(0, 1).reshape(&[-1]), vec![x.clone()]);
    check(|v| v[0].flatten(1, -1), vec![x.clone()]);
    check(|v| v[0].unsqueeze(1).squeeze_dim(1), vec![x.clone()]);
    check(|v| v[0].narrow(2, 1, 2), vec![x.clone()]);
    check(|v| v[0].select(1, 2), vec![x.clone()]);
    check(|v| v[0].expand(&[2, 2, 3, 4]), vec![x.clone()]);
    let index = Tensor::from_vec(vec![2i64, 0, 2, 1], &[4]);
    check(|v| v[0].index_select(2, &index), vec![x.clone()]);
    let table = input(&[6, 3], -1.0, 1.0);
    let ids = Tensor::from_vec(vec![1i64, 5, 1, 0], &[2, 2]);
    check(|v| v[0].embedding(&ids), vec![table]);
    let y = input(&[2, 1, 4], -1.0, 1.0);
    check(
        |v| Tensor::cat(&[v[0].clone(), v[1].clone()], 1),
        vec![x.clone(), y],
    );
    let z = input(&[2, 3, 4], -1.0, 1.0);
    check(
        |v| Tensor::stack(&[v[0].clone(), v[1].clone()], 1),
        vec![x, z],
    );
}

#[test]
fn reused_inputs_accumulate() {
    manual_seed(7);
    let x = input(&[3, 4], -1.0, 1.0);
    check(|v| &(&v[0] * &v[0]) + &v[0].exp(), vec![x.clone()]);
    let w = input(&[4, 4], -1.0, 1.0);
    // x feeds three paths, w two.
    check(
        |v| {
            (&v[0].matmul(&v[1]).tanh() + &v[0])
                .matmul(&v[1].t())
                .sum_dim(0, false)
                * &v[0].sum_dim(0, false)
        },
        vec![x, w],
    );
}
