#!/bin/sh
# Stands in for t-quant-avx512emu and t-forward-avx512emu when configure
# found no SIMDe (mk/quant.am): says why the AVX-512 kernels go untested.
echo "1..0 # SKIP libsimde-dev is not installed, so the AVX-512 kernels are tested only on CPUs with AVX-512 (apt-get install libsimde-dev, then ./configure again)"
