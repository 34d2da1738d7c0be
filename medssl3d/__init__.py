"""medssl3d."""
