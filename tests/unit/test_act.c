/*
 * Copyright (C) infergate authors
 *
 * Unit tests of backend/ig_act.h: the per-element activations and the
 * softmax span that the CPU path and the CUDA kernels share.
 */


#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <math.h>
#include <string.h>
#include <cmocka.h>

#include "../../backend/ig_act.h"


static void
test_relu_family(void **state)
{
    (void) state;

    assert_true(ig_act_relu(-2.5f) == 0.0f);
    assert_true(ig_act_relu(3.0f) == 3.0f);
    assert_true(isnan(ig_act_relu(NAN)));           /* as torch.relu */
    assert_true(ig_act_leaky_relu(-2.0f, 0.01f) == -0.02f);
    assert_true(ig_act_leaky_relu(2.0f, 0.01f) == 2.0f);
    assert_true(ig_act_apply(IG_ACT_LEAKY_RELU, 0.2f, -1.0f) == -0.2f);
    assert_true(ig_act_apply(IG_ACT_NONE, 0.0f, -7.0f) == -7.0f);
}


static void
test_sigmoid_tanh(void **state)
{
    float  x;

    (void) state;

    /* the extremes saturate without NaN or overflow */
    assert_true(ig_act_sigmoid(-1000.0f) == 0.0f);
    assert_true(ig_act_sigmoid(1000.0f) == 1.0f);
    assert_true(ig_act_sigmoid(0.0f) == 0.5f);
    assert_true(ig_act_tanh(-1000.0f) == -1.0f);

    for (x = -20.0f; x <= 20.0f; x += 0.37f) {
        assert_true(fabs(ig_act_apply(IG_ACT_SIGMOID, 0, x)
                         - 1.0 / (1.0 + exp(-(double) x))) < 1e-6);
        assert_true(fabs(ig_act_apply(IG_ACT_TANH, 0, x) - tanh(x)) < 1e-6);
    }
}


static void
test_softmax_span(void **state)
{
    int     i;
    float   v[6], out[6];
    double  s;

    (void) state;

    /* large logits: the maximum is subtracted before expf */
    v[0] = 1000.0f; v[1] = 999.0f; v[2] = -1000.0f;
    ig_softmax_span(v, out, 3, 1);
    assert_true(fabs(out[0] - 1.0 / (1.0 + exp(-1.0))) < 1e-6);
    assert_true(out[2] == 0.0f);

    /* a strided span (inner axis) in place touches only its elements */
    for (i = 0; i < 6; i++) {
        v[i] = (float) i;
    }

    ig_softmax_span(v + 1, v + 1, 3, 2);           /* elements 1, 3, 5 */
    assert_true(v[0] == 0.0f && v[2] == 2.0f && v[4] == 4.0f);

    s = (double) v[1] + v[3] + v[5];
    assert_true(fabs(s - 1.0) < 1e-6);
    assert_true(fabs(v[5] - exp(4.0) / (1 + exp(2.0) + exp(4.0))) < 1e-6);

    /* a span of one is 1 */
    v[0] = -3.0f;
    ig_softmax_span(v, v, 1, 1);
    assert_true(v[0] == 1.0f);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relu_family),
        cmocka_unit_test(test_sigmoid_tanh),
        cmocka_unit_test(test_softmax_span),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
