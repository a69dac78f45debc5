"""emotion-edge-study: runs one participant through a study file in the browser and marks
every clip at the moments it was really on screen (docs/study.md)."""
