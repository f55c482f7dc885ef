"""Physical constants in the units used throughout `physics` (eV, nm)."""

HBAR2_OVER_2ME_EV_NM2 = 0.0380998212
"""ħ²/(2 m_e) in eV·nm² (CODATA 2018)."""

COULOMB_EV_NM = 1.43996448
"""e²/(4π ε0) in eV·nm (CODATA 2018)."""

HARTREE_EV = 27.211386246
"""Hartree energy in eV."""

BOHR_NM = 0.0529177211
"""Bohr radius in nm."""
