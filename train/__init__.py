"""emotion-edge workstation side: train the emotion CNN on FER2013 (+ FER+ votes)."""
