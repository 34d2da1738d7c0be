"""Two-sample checks that two random transforms draw from one distribution, with tolerances from the sample size.

Proportions and means: z-tests on their standard errors; spreads: a z-test on the standard error of the sample
variance, ``sqrt((m4 - var^2) / n)``; whole distributions: two-sample Kolmogorov-Smirnov. A check fails by chance
with probability ~1e-5 (``|z| > Z``, ``p < P_MIN``).
"""

import numpy as np
from scipy import stats

Z = 4.4  # two-sided normal quantile for a false alarm rate of ~1e-5 per check
P_MIN = 1e-5


def same_proportion(a, b):
    """z of the difference of two proportions (boolean arrays), pooled standard error."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled = (a.sum() + b.sum()) / (a.size + b.size)
    se = np.sqrt(pooled * (1 - pooled) * (1 / a.size + 1 / b.size))
    return 0.0 if se == 0 else abs(a.mean() - b.mean()) / se


def same_mean(a, b):
    se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    return 0.0 if se == 0 and a.mean() == b.mean() else abs(a.mean() - b.mean()) / se


def same_spread(a, b):
    """z of the difference of two variances; SE of a sample variance: sqrt((m4 - var^2) / n)."""
    def variance_and_se(x):
        centred = x - x.mean()
        var = (centred**2).mean()
        return var, np.sqrt(max((centred**4).mean() - var**2, 0.0) / x.size)

    (va, sa), (vb, sb) = variance_and_se(a), variance_and_se(b)
    se = np.hypot(sa, sb)
    return 0.0 if se == 0 and va == vb else abs(va - vb) / se


def check_same(statistic_a, statistic_b, what, distribution=True):
    """Means, spreads and (for continuous statistics) the whole distributions agree."""
    a, b = np.asarray(statistic_a, float), np.asarray(statistic_b, float)
    assert same_mean(a, b) < Z, f"{what}: means {a.mean():.4f} vs {b.mean():.4f}"
    assert same_spread(a, b) < Z, f"{what}: standard deviations {a.std():.4f} vs {b.std():.4f}"
    if distribution:
        p = stats.ks_2samp(a, b).pvalue
        assert p > P_MIN, f"{what}: Kolmogorov-Smirnov p = {p:.2g}"
