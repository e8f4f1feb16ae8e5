"""Running a model over requests and storing the result: the scoring pass, the chunked stored pass, the generation
and teacher-forced passes of free-form tasks, and kld's baseline-store and candidate passes."""
