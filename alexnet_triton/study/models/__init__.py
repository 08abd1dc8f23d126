"""Models, not measurements: FLOPs and minimum bytes per layer (``cost``), the roofline from published peaks
(``roofline``), a lower bound per conv kernel from its compiled main loop (``loop_model``) and one per training step
(``step_model``)."""
