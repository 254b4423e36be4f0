"""3D brain tumour segmentation of multimodal MRI (BraTS-style)."""
