"""Things built from the layers below: training under edits, A/B comparison, the bias
experiment, the seed's lessons, regenerating the shipped default weights."""
