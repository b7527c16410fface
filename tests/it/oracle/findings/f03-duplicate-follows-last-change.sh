#!/usr/bin/env bash
# F3 (D7; issue 25 #4): an object declared in two files follows whichever file changed last,
# not the last declaration in `kubectl apply -R -f` order; deleting the file whose copy is live
# leaves its content running.
# Expected: after push 2, o-cm-1 = t1 (b.yaml sorts after a-dup.yaml: b.yaml wins, as plan says);
# after push 4, o-cm-1 = t3 (the remaining declaration).
# Observed: push 2 applies a-dup.yaml's t2 (plan says b.yaml:1 is applied); push 4 prunes
# nothing and applies nothing: t1 (the deleted file's content) stays live.
. "$(dirname "$0")/prelude.sh"
put app/b.yaml "$(cm o-cm-1 t1)"
push 1; live
put app/a-dup.yaml "$(cm o-cm-1 t2)"
push 2; live
put app/a-dup.yaml "$(cm o-cm-1 t3)"
put app/b.yaml "$(cm o-cm-1 t1)
# a comment-only edit of the winner"
push 3; live
del app/b.yaml
push 4; live
show
