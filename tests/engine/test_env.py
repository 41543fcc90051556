import pytest

from cifarbench.engine import env

ZEN3 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n"
ZEN4 = ZEN3.replace("bmi2", "bmi2 avx512f avx512_bf16")
XEON = ZEN4.replace("avx512_bf16", "avx512_bf16 amx_bf16 amx_tile")


@pytest.mark.parametrize("text,isa,avx2_only", [(ZEN3, "avx2", True), (ZEN4, "avx512_bf16", False),
                                                (XEON, "amx_bf16", False), (None, None, False),
                                                ("flags\t: fp asimd bf16\n", None, False)])
def test_the_cpu_flags_name_the_isa_and_the_avx2_only_cpus(monkeypatch, text, isa, avx2_only):
    monkeypatch.setattr(env, "_cpuinfo", lambda: text)
    assert env.cpu_isa() == isa
    assert env.cpu_avx2_only() is avx2_only
    assert env.cpu_has_avx512_bf16() is (isa in ("avx512_bf16", "amx_bf16"))
