-------------------------------- MODULE Raft --------------------------------
(***************************************************************************)
(* The Raft consensus protocol as Mox implements it (mox/consensus/raft/). *)
(*                                                                         *)
(* Layout and much of the vocabulary follow Diego Ongaro's raft.tla.  Mox  *)
(* adds what the implementation has and the original spec leaves out:     *)
(*   - a no-op entry appended by every new leader;                         *)
(*   - log compaction (Snapshot) and snapshot transfer to lagging          *)
(*     followers (SendSnapshot, HandleInstallSnapshotRequest/Response); *)
(*   - single-server membership change through configuration entries that *)
(*     take effect when appended;                                          *)
(*   - crash/restart that keeps exactly the durable state;                 *)
(*   - optimistic pipelining of AppendEntries (nextIndex advances on send).*)
(*                                                                         *)
(* The network is a bag of messages (a function from message records to   *)
(* counts): delivery is in any order, DropMessage loses one copy and       *)
(* DuplicateMessage adds one.  Where the implementation has freedom (when  *)
(* to send, how many entries per message, where to snapshot) this spec is  *)
(* nondeterministic, so a trace of the implementation can be matched       *)
(* against it.  specs/README.md holds the shared semantics, the table of   *)
(* actions, core functions and trace events, and the mapping of message    *)
(* fields to trace fields.                                                 *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets, Sequences, TLC

\* The set of server IDs (model values).  Servers outside InitConfig start
\* with an empty log and join only through a configuration entry.
CONSTANT Server

\* The members of the initial configuration: a non-empty subset of Server.
CONSTANT InitConfig

\* The set of values a client can propose (model values).
CONSTANT Value

\* A value that is not a server: "no vote", and the payload of no-op entries.
CONSTANT Nil

ASSUME InitConfig \subseteq Server /\ InitConfig /= {}
ASSUME Nil \notin Server /\ Nil \notin Value

\* Server roles.  Strings, as they appear in trace events.
Follower == "follower"
Candidate == "candidate"
Leader == "leader"
Roles == {Follower, Candidate, Leader}

\* Entry kinds.  A "normal" entry carries a Value, a "config" entry carries
\* the set of members of the new configuration, a "noop" entry carries Nil.
EntryKinds == {"normal", "noop", "config"}

\* Message types, named as the `type` field of a trace event's `msg`.
MessageTypes == {"RequestVote", "RequestVoteResponse",
                 "AppendEntries", "AppendEntriesResponse",
                 "InstallSnapshot", "InstallSnapshotResponse"}

\* The shape of a log entry: a client value, a no-op, or a configuration
\* (a non-empty set of members).
Entry == [term : Nat, kind : {"normal"}, value : Value]
    \cup [term : Nat, kind : {"noop"}, value : {Nil}]
    \cup [term : Nat, kind : {"config"}, value : (SUBSET Server) \ {{}}]

----
\* Global variables, each followed by its type invariant.

\* The network: a bag of messages, i.e. a function from message records to
\* the number of copies in flight (always >= 1: a message whose last copy is
\* delivered or dropped leaves the domain).
VARIABLE messages
MessagesTypeOK ==
    \A m \in DOMAIN messages :
        /\ messages[m] \in Nat \ {0}
        /\ m.mtype \in MessageTypes
        /\ m.mterm \in Nat
        /\ m.msource \in Server
        /\ m.mdest \in Server
        /\ m.msource /= m.mdest

\* A history variable (ghost): the committed prefix of the log as first
\* committed by some leader.  committed[k] is a record with the entry, the
\* term in which it was committed, and the configuration whose quorum held
\* it at that moment.  Implementations do not have it; invariants use it.
VARIABLE committed
CommittedTypeOK ==
    \A k \in DOMAIN committed :
        /\ committed[k].entry \in Entry
        /\ committed[k].commitTerm \in Nat
        /\ committed[k].quorumConfig \subseteq Server

----
\* The following variables are all per server (functions with domain Server),
\* each group followed by its type invariant.

\* The server's term number.
VARIABLE currentTerm
\* The server's role (Follower, Candidate, or Leader).
VARIABLE state
\* The candidate the server voted for in its current term, or Nil.
VARIABLE votedFor
serverVars == <<currentTerm, state, votedFor>>
ServerVarsTypeOK ==
    /\ currentTerm \in [Server -> Nat]
    /\ state \in [Server -> Roles]
    /\ votedFor \in [Server -> Server \cup {Nil}]

\* The entries after the snapshot: log[i][p] is the entry at index
\* snapshotIndex[i] + p.  Each entry is [term, kind, value].
VARIABLE log
\* The index of the latest entry the server knows to be committed.
VARIABLE commitIndex
logVars == <<log, commitIndex>>
LogVarsTypeOK ==
    /\ \A i \in Server : \A p \in DOMAIN log[i] : log[i][p] \in Entry
    /\ commitIndex \in [Server -> Nat]

\* The index and term of the last entry covered by the server's snapshot
\* (0 and 0: no snapshot).  Entries up to snapshotIndex are not in log.
VARIABLE snapshotIndex
VARIABLE snapshotTerm
\* The configuration in effect at snapshotIndex (InitConfig before any
\* snapshot).  A server's configuration is that of the last config entry of
\* its log, else this one.
VARIABLE snapshotConfig
snapshotVars == <<snapshotIndex, snapshotTerm, snapshotConfig>>
SnapshotVarsTypeOK ==
    /\ snapshotIndex \in [Server -> Nat]
    /\ snapshotTerm \in [Server -> Nat]
    /\ \A i \in Server : snapshotConfig[i] \in (SUBSET Server) \ {{}}

\* The following variables are used only on candidates:
\* The set of servers from which the candidate has received a
\* RequestVoteResponse in its current term.
VARIABLE votesResponded
\* The set of servers from which the candidate has received a vote in its
\* current term.
VARIABLE votesGranted
candidateVars == <<votesResponded, votesGranted>>
CandidateVarsTypeOK ==
    /\ votesResponded \in [Server -> SUBSET Server]
    /\ votesGranted \in [Server -> SUBSET Server]

\* The following variables are used only on leaders:
\* The next entry to send to each follower.
VARIABLE nextIndex
\* The latest entry that each follower has acknowledged is the same as the
\* leader's.  Used to calculate commitIndex on the leader.
VARIABLE matchIndex
leaderVars == <<nextIndex, matchIndex>>
LeaderVarsTypeOK ==
    /\ nextIndex \in [Server -> [Server -> Nat \ {0}]]
    /\ matchIndex \in [Server -> [Server -> Nat]]

\* All variables; used for stuttering (asserting state hasn't changed).
vars == <<messages, committed, serverVars, candidateVars, leaderVars,
          logVars, snapshotVars>>

\* Every variable has its declared shape.
TypeOK ==
    /\ MessagesTypeOK
    /\ CommittedTypeOK
    /\ ServerVarsTypeOK
    /\ LogVarsTypeOK
    /\ SnapshotVarsTypeOK
    /\ CandidateVarsTypeOK
    /\ LeaderVarsTypeOK

----
\* Helpers

Max(S) == CHOOSE x \in S : \A y \in S : y <= x
Min(S) == CHOOSE x \in S : \A y \in S : x <= y

\* A strict majority of configuration c.
IsQuorum(S, c) == 2 * Cardinality(S \cap c) > Cardinality(c)

\* The index of the last entry of i's log (the snapshot's last entry when the
\* log after the snapshot is empty), and its term.
LastIndex(i) == snapshotIndex[i] + Len(log[i])
LastTerm(i) == IF Len(log[i]) > 0 THEN log[i][Len(log[i])].term
               ELSE snapshotTerm[i]

\* The entry at index k of i's log; requires snapshotIndex[i] < k <= LastIndex(i).
EntryAt(i, k) == log[i][k - snapshotIndex[i]]

\* The term of the entry at index k; defined for snapshotIndex[i] <= k <= LastIndex(i).
TermAt(i, k) == IF k = snapshotIndex[i] THEN snapshotTerm[i]
                ELSE EntryAt(i, k).term

\* The configuration in effect at index k (snapshotIndex[i] <= k <= LastIndex(i)):
\* the last config entry at or before k, else the snapshot's configuration.
ConfigAt(i, k) ==
    LET ps == {p \in 1..(k - snapshotIndex[i]) : log[i][p].kind = "config"}
    IN  IF ps = {} THEN snapshotConfig[i] ELSE log[i][Max(ps)].value

\* The server's current configuration (effective as soon as appended).
Config(i) == ConfigAt(i, LastIndex(i))

\* The index of the last config entry in i's log, or 0 if there is none.
LastConfigIndex(i) ==
    LET ps == {p \in 1..Len(log[i]) : log[i][p].kind = "config"}
    IN  IF ps = {} THEN 0 ELSE snapshotIndex[i] + Max(ps)

\* Add a message to the bag of messages.
WithMessage(m, msgs) ==
    IF m \in DOMAIN msgs THEN [msgs EXCEPT ![m] = @ + 1]
    ELSE msgs @@ (m :> 1)

\* Remove one copy of a message from the bag of messages.
WithoutMessage(m, msgs) ==
    IF msgs[m] = 1 THEN [n \in DOMAIN msgs \ {m} |-> msgs[n]]
    ELSE [msgs EXCEPT ![m] = @ - 1]

\* Add a message to the bag of messages.
Send(m) == messages' = WithMessage(m, messages)

\* Remove a message from the bag of messages.  Used when a server is done
\* processing a message.
Discard(m) == messages' = WithoutMessage(m, messages)

\* Combination of Send and Discard.
Reply(response, request) ==
    messages' = WithMessage(response, WithoutMessage(request, messages))

\* Server i's view of index k: whether it holds the committed entry there,
\* either in its log or covered by its snapshot.
Holds(i, k, entry) ==
    \/ k <= snapshotIndex[i]
    \/ /\ k <= LastIndex(i)
       /\ EntryAt(i, k) = entry

----
\* Define initial values for all variables

InitServerVars == /\ currentTerm = [i \in Server |-> 0]
                  /\ state       = [i \in Server |-> Follower]
                  /\ votedFor    = [i \in Server |-> Nil]
InitCandidateVars == /\ votesResponded = [i \in Server |-> {}]
                     /\ votesGranted   = [i \in Server |-> {}]
InitLeaderVars == /\ nextIndex  = [i \in Server |-> [j \in Server |-> 1]]
                  /\ matchIndex = [i \in Server |-> [j \in Server |-> 0]]
InitLogVars == /\ log         = [i \in Server |-> << >>]
               /\ commitIndex = [i \in Server |-> 0]
InitSnapshotVars == /\ snapshotIndex  = [i \in Server |-> 0]
                    /\ snapshotTerm   = [i \in Server |-> 0]
                    /\ snapshotConfig = [i \in Server |-> InitConfig]
Init == /\ messages = [m \in {} |-> 0]
        /\ committed = << >>
        /\ InitServerVars
        /\ InitCandidateVars
        /\ InitLeaderVars
        /\ InitLogVars
        /\ InitSnapshotVars

----
\* Define state transitions

\* Server i crashes and restarts.  currentTerm, votedFor, log and snapshot
\* are durable and kept; the role, commitIndex (back to the snapshot) and
\* candidate and leader state are volatile and lost.
Restart(i) ==
    /\ state'          = [state EXCEPT ![i] = Follower]
    /\ votesResponded' = [votesResponded EXCEPT ![i] = {}]
    /\ votesGranted'   = [votesGranted EXCEPT ![i] = {}]
    /\ nextIndex'      = [nextIndex EXCEPT ![i] = [j \in Server |-> 1]]
    /\ matchIndex'     = [matchIndex EXCEPT ![i] = [j \in Server |-> 0]]
    /\ commitIndex'    = [commitIndex EXCEPT ![i] = snapshotIndex[i]]
    /\ UNCHANGED <<messages, committed, currentTerm, votedFor, log,
                   snapshotVars>>

\* Server i times out and starts a new election.  A server outside its own
\* configuration never times out.
Timeout(i) ==
    /\ state[i] \in {Follower, Candidate}
    /\ i \in Config(i)
    /\ currentTerm'    = [currentTerm EXCEPT ![i] = currentTerm[i] + 1]
    /\ state'          = [state EXCEPT ![i] = Candidate]
    /\ votedFor'       = [votedFor EXCEPT ![i] = i]
    /\ votesResponded' = [votesResponded EXCEPT ![i] = {i}]
    /\ votesGranted'   = [votesGranted EXCEPT ![i] = {i}]
    /\ UNCHANGED <<messages, committed, leaderVars, logVars, snapshotVars>>

\* Candidate i sends j a RequestVote request.
RequestVote(i, j) ==
    /\ state[i] = Candidate
    /\ j \in Config(i) \ {i}
    /\ j \notin votesResponded[i]
    /\ Send([mtype         |-> "RequestVote",
             mterm         |-> currentTerm[i],
             mlastLogTerm  |-> LastTerm(i),
             mlastLogIndex |-> LastIndex(i),
             msource       |-> i,
             mdest         |-> j])
    /\ UNCHANGED <<committed, serverVars, candidateVars, leaderVars, logVars,
                   snapshotVars>>

\* Candidate i has votes from a quorum of its configuration and becomes
\* leader: nextIndex starts after its last entry, matchIndex at 0, and it
\* appends a no-op entry of its new term.
BecomeLeader(i) ==
    /\ state[i] = Candidate
    /\ IsQuorum(votesGranted[i], Config(i))
    /\ state'      = [state EXCEPT ![i] = Leader]
    /\ nextIndex'  = [nextIndex EXCEPT ![i] =
                         [j \in Server |-> LastIndex(i) + 1]]
    /\ matchIndex' = [matchIndex EXCEPT ![i] = [j \in Server |-> 0]]
    /\ log'        = [log EXCEPT ![i] =
                         Append(log[i], [term  |-> currentTerm[i],
                                         kind  |-> "noop",
                                         value |-> Nil])]
    /\ UNCHANGED <<messages, committed, currentTerm, votedFor, candidateVars,
                   commitIndex, snapshotVars>>

\* Leader i receives a client request to add v to the log.
ClientRequest(i, v) ==
    /\ state[i] = Leader
    /\ log' = [log EXCEPT ![i] =
                  Append(log[i], [term |-> currentTerm[i], kind |-> "normal",
                                  value |-> v])]
    /\ UNCHANGED <<messages, committed, serverVars, candidateVars, leaderVars,
                   commitIndex, snapshotVars>>

\* Leader i appends a configuration entry that adds or removes server s.
\* Only one configuration entry may be uncommitted at a time, and only after
\* the leader has committed an entry of its own term (its no-op suffices):
\* without that rule single-server changes are unsafe (Ongaro, raft-dev
\* 2015).  The last member is never removed.
ChangeMembership(i, s) ==
    /\ state[i] = Leader
    /\ LastConfigIndex(i) <= commitIndex[i]
    /\ TermAt(i, commitIndex[i]) = currentTerm[i]
    /\ LET old == Config(i)
           new == IF s \in old THEN old \ {s} ELSE old \cup {s}
       IN  /\ new /= {}
           /\ log' = [log EXCEPT ![i] =
                         Append(log[i], [term |-> currentTerm[i],
                                         kind |-> "config", value |-> new])]
    /\ UNCHANGED <<messages, committed, serverVars, candidateVars, leaderVars,
                   commitIndex, snapshotVars>>

\* Leader i advances its commitIndex to an index of an entry of its own term
\* that a quorum of its configuration holds (the leader counts itself only
\* while it is a member).  The highest such index is the usual choice; any
\* one is allowed, because the implementation counts the leader's own
\* entries only once they are persisted and may therefore commit less.  The
\* newly committed entries are recorded in the history variable.  A leader
\* that is not a member of its configuration steps down once that
\* configuration entry is committed.
AdvanceCommitIndex(i) ==
    /\ state[i] = Leader
    /\ LET conf == Config(i)
           \* The servers of conf that hold index k.
           Agree(k) == {j \in conf \ {i} : matchIndex[i][j] >= k}
                       \cup (IF i \in conf THEN {i} ELSE {})
           agreeIndexes == {k \in (commitIndex[i] + 1)..LastIndex(i) :
                               /\ TermAt(i, k) = currentTerm[i]
                               /\ IsQuorum(Agree(k), conf)}
           oldLen == Len(committed)
       IN  \E newCommit \in agreeIndexes :
           /\ commitIndex' = [commitIndex EXCEPT ![i] = newCommit]
           /\ committed' =
                IF newCommit <= oldLen THEN committed
                ELSE committed \o
                     [p \in 1..(newCommit - oldLen) |->
                         [entry        |-> EntryAt(i, oldLen + p),
                          commitTerm   |-> currentTerm[i],
                          quorumConfig |-> conf]]
           /\ state' = IF i \notin conf /\ LastConfigIndex(i) <= newCommit
                       THEN [state EXCEPT ![i] = Follower]
                       ELSE state
    /\ UNCHANGED <<messages, currentTerm, votedFor, candidateVars, leaderVars,
                   log, snapshotVars>>

\* The numbers of entries leader i may send j in one AppendEntries request.
\* The implementation bounds it by its batch and message size limits; bounded
\* models substitute a smaller set.
BatchSizes(i, j) == 0..(LastIndex(i) + 1 - nextIndex[i][j])

\* Leader i sends j an AppendEntries request with the entries from
\* nextIndex[i][j] on (possibly none: a heartbeat) and advances nextIndex
\* past them without waiting for the response (optimistic pipelining).
AppendEntries(i, j) ==
    /\ state[i] = Leader
    /\ j \in Config(i) \ {i}
    /\ nextIndex[i][j] > snapshotIndex[i]
    /\ nextIndex[i][j] <= LastIndex(i) + 1
    /\ \E n \in BatchSizes(i, j) :
        LET prevLogIndex == nextIndex[i][j] - 1
            lastSent == prevLogIndex + n
        IN  /\ Send([mtype          |-> "AppendEntries",
                     mterm          |-> currentTerm[i],
                     mprevLogIndex  |-> prevLogIndex,
                     mprevLogTerm   |-> TermAt(i, prevLogIndex),
                     mentries       |-> SubSeq(log[i],
                                            prevLogIndex + 1 - snapshotIndex[i],
                                            lastSent - snapshotIndex[i]),
                     mcommitIndex   |-> Min({commitIndex[i], lastSent}),
                     msource        |-> i,
                     mdest          |-> j])
            /\ nextIndex' = [nextIndex EXCEPT ![i][j] = lastSent + 1]
    /\ UNCHANGED <<committed, serverVars, candidateVars, matchIndex, logVars,
                   snapshotVars>>

\* Leader i sends j its snapshot because the entries j needs next have been
\* compacted away.
SendSnapshot(i, j) ==
    /\ state[i] = Leader
    /\ j \in Config(i) \ {i}
    /\ nextIndex[i][j] <= snapshotIndex[i]
    /\ Send([mtype           |-> "InstallSnapshot",
             mterm           |-> currentTerm[i],
             msnapshotIndex  |-> snapshotIndex[i],
             msnapshotTerm   |-> snapshotTerm[i],
             msnapshotConfig |-> snapshotConfig[i],
             msource         |-> i,
             mdest           |-> j])
    /\ nextIndex' = [nextIndex EXCEPT ![i][j] = snapshotIndex[i] + 1]
    /\ UNCHANGED <<committed, serverVars, candidateVars, matchIndex, logVars,
                   snapshotVars>>

\* Server i compacts its log up to some committed index s.
Snapshot(i) ==
    \E s \in (snapshotIndex[i] + 1)..commitIndex[i] :
        /\ snapshotIndex'  = [snapshotIndex EXCEPT ![i] = s]
        /\ snapshotTerm'   = [snapshotTerm EXCEPT ![i] = TermAt(i, s)]
        /\ snapshotConfig' = [snapshotConfig EXCEPT ![i] = ConfigAt(i, s)]
        /\ log' = [log EXCEPT ![i] =
                      SubSeq(log[i], s - snapshotIndex[i] + 1, Len(log[i]))]
        /\ UNCHANGED <<messages, committed, serverVars, candidateVars,
                       leaderVars, commitIndex>>

----
\* Message handlers
\* i = recipient, j = sender, m = message

\* Server i receives a RequestVote request from server j with
\* m.mterm = currentTerm[i] (UpdateTerm came first if it was higher), and
\* grants its vote iff it has not voted for another candidate in this term
\* and the candidate's log is at least as up-to-date as its own.
HandleRequestVoteRequest(i, m) ==
    /\ m.mtype = "RequestVote"
    /\ m.mterm = currentTerm[i]
    /\ LET j     == m.msource
           logOk == \/ m.mlastLogTerm > LastTerm(i)
                    \/ /\ m.mlastLogTerm = LastTerm(i)
                       /\ m.mlastLogIndex >= LastIndex(i)
           grant == /\ logOk
                    /\ votedFor[i] \in {Nil, j}
       IN  /\ votedFor' = IF grant THEN [votedFor EXCEPT ![i] = j]
                          ELSE votedFor
           /\ Reply([mtype        |-> "RequestVoteResponse",
                     mterm        |-> currentTerm[i],
                     mvoteGranted |-> grant,
                     msource      |-> i,
                     mdest        |-> j],
                     m)
    /\ UNCHANGED <<committed, currentTerm, state, candidateVars, leaderVars,
                   logVars, snapshotVars>>

\* Server i receives a RequestVote response from server j with
\* m.mterm = currentTerm[i].  A candidate records the response and the vote;
\* a server that is no longer a candidate in this term just consumes it.
HandleRequestVoteResponse(i, m) ==
    /\ m.mtype = "RequestVoteResponse"
    /\ m.mterm = currentTerm[i]
    /\ LET j == m.msource
       IN  IF state[i] = Candidate
           THEN /\ votesResponded' = [votesResponded EXCEPT ![i] = @ \cup {j}]
                /\ votesGranted'   = IF m.mvoteGranted
                                     THEN [votesGranted EXCEPT ![i] = @ \cup {j}]
                                     ELSE votesGranted
           ELSE UNCHANGED candidateVars
    /\ Discard(m)
    /\ UNCHANGED <<committed, serverVars, leaderVars, logVars, snapshotVars>>

\* Server i receives an AppendEntries request from server j with
\* m.mterm = currentTerm[i] and handles the whole message in one step: a
\* candidate first becomes a follower; the request is rejected if i lacks
\* the entry at mprevLogIndex; otherwise entries already covered by i's
\* snapshot are skipped, a conflicting suffix is truncated, missing entries
\* are appended (a matching prefix never shortens the log: an old,
\* reordered request must not undo a newer one), and commitIndex advances.
HandleAppendEntriesRequest(i, m) ==
    /\ m.mtype = "AppendEntries"
    /\ m.mterm = currentTerm[i]
    /\ state[i] /= Leader
    /\ LET j        == m.msource
           prev     == m.mprevLogIndex
           n        == Len(m.mentries)
           si       == snapshotIndex[i]
           logOk    == /\ prev <= LastIndex(i)
                       /\ prev >= si => TermAt(i, prev) = m.mprevLogTerm
           \* The entry of the message at index k.
           MEntry(k) == m.mentries[k - prev]
           first    == Max({prev + 1, si + 1})
           conflicts == {k \in first..(prev + n) :
                            /\ k <= LastIndex(i)
                            /\ EntryAt(i, k).term /= MEntry(k).term}
           newLog   == IF conflicts /= {}
                       THEN LET c == Min(conflicts)
                            IN  SubSeq(log[i], 1, c - 1 - si)
                                \o SubSeq(m.mentries, c - prev, n)
                       ELSE IF prev + n > LastIndex(i)
                       THEN log[i] \o SubSeq(m.mentries,
                                             LastIndex(i) + 1 - prev, n)
                       ELSE log[i]
       IN  /\ state' = [state EXCEPT ![i] = Follower]
           /\ IF logOk
              THEN /\ log' = [log EXCEPT ![i] = newLog]
                   /\ commitIndex' =
                        [commitIndex EXCEPT ![i] =
                            Max({@, Min({m.mcommitIndex, prev + n})})]
                   /\ Reply([mtype       |-> "AppendEntriesResponse",
                             mterm       |-> currentTerm[i],
                             msuccess    |-> TRUE,
                             mmatchIndex |-> prev + n,
                             msource     |-> i,
                             mdest       |-> j],
                             m)
              ELSE /\ Reply([mtype       |-> "AppendEntriesResponse",
                             mterm       |-> currentTerm[i],
                             msuccess    |-> FALSE,
                             mmatchIndex |-> Min({prev - 1, LastIndex(i)}),
                             msource     |-> i,
                             mdest       |-> j],
                             m)
                   /\ UNCHANGED logVars
    /\ UNCHANGED <<committed, currentTerm, votedFor, candidateVars, leaderVars,
                   snapshotVars>>

\* Server i receives an AppendEntries response from server j with
\* m.mterm = currentTerm[i].  A leader raises matchIndex and nextIndex on
\* success and backs nextIndex off on failure (never below matchIndex + 1);
\* a server that is no longer leader in this term just consumes it.
HandleAppendEntriesResponse(i, m) ==
    /\ m.mtype = "AppendEntriesResponse"
    /\ m.mterm = currentTerm[i]
    /\ LET j == m.msource
       IN  IF state[i] /= Leader
           THEN UNCHANGED leaderVars
           ELSE IF m.msuccess
           THEN /\ matchIndex' = [matchIndex EXCEPT ![i][j] =
                                    Max({@, m.mmatchIndex})]
                /\ nextIndex'  = [nextIndex EXCEPT ![i][j] =
                                    Max({@, m.mmatchIndex + 1})]
           ELSE /\ nextIndex'  = [nextIndex EXCEPT ![i][j] =
                                    Max({Min({@ - 1, m.mmatchIndex + 1}),
                                         matchIndex[i][j] + 1})]
                /\ UNCHANGED matchIndex
    /\ Discard(m)
    /\ UNCHANGED <<committed, serverVars, candidateVars, logVars, snapshotVars>>

\* Server i receives an InstallSnapshot request from server j with
\* m.mterm = currentTerm[i].  A candidate first becomes a follower.  A
\* snapshot at or below commitIndex changes nothing; a newer one replaces the
\* snapshot, keeps the log suffix after it if the log has the snapshot's last
\* entry (else discards the log), and commits up to it.
HandleInstallSnapshotRequest(i, m) ==
    /\ m.mtype = "InstallSnapshot"
    /\ m.mterm = currentTerm[i]
    /\ state[i] /= Leader
    /\ state' = [state EXCEPT ![i] = Follower]
    /\ LET j  == m.msource
           si == m.msnapshotIndex
       IN  IF si <= commitIndex[i]
           THEN /\ Reply([mtype       |-> "InstallSnapshotResponse",
                          mterm       |-> currentTerm[i],
                          mmatchIndex |-> commitIndex[i],
                          msource     |-> i,
                          mdest       |-> j],
                          m)
                /\ UNCHANGED <<logVars, snapshotVars>>
           ELSE /\ log' = [log EXCEPT ![i] =
                      IF si <= LastIndex(i) /\ TermAt(i, si) = m.msnapshotTerm
                      THEN SubSeq(log[i], si - snapshotIndex[i] + 1, Len(log[i]))
                      ELSE << >>]
                /\ snapshotIndex'  = [snapshotIndex EXCEPT ![i] = si]
                /\ snapshotTerm'   = [snapshotTerm EXCEPT ![i] = m.msnapshotTerm]
                /\ snapshotConfig' = [snapshotConfig EXCEPT ![i] =
                                         m.msnapshotConfig]
                /\ commitIndex'    = [commitIndex EXCEPT ![i] = si]
                /\ Reply([mtype       |-> "InstallSnapshotResponse",
                          mterm       |-> currentTerm[i],
                          mmatchIndex |-> si,
                          msource     |-> i,
                          mdest       |-> j],
                          m)
    /\ UNCHANGED <<committed, currentTerm, votedFor, candidateVars, leaderVars>>

\* Server i receives an InstallSnapshot response from server j with
\* m.mterm = currentTerm[i]: a leader handles it as a successful
\* AppendEntries response; a server that is no longer leader consumes it.
HandleInstallSnapshotResponse(i, m) ==
    /\ m.mtype = "InstallSnapshotResponse"
    /\ m.mterm = currentTerm[i]
    /\ LET j == m.msource
       IN  IF state[i] = Leader
           THEN /\ matchIndex' = [matchIndex EXCEPT ![i][j] =
                                    Max({@, m.mmatchIndex})]
                /\ nextIndex'  = [nextIndex EXCEPT ![i][j] =
                                    Max({@, m.mmatchIndex + 1})]
           ELSE UNCHANGED leaderVars
    /\ Discard(m)
    /\ UNCHANGED <<committed, serverVars, candidateVars, logVars, snapshotVars>>

\* Server i sees a message with a term newer than its own: it adopts the
\* term, becomes a follower and forgets its vote.  The message stays in the
\* network; the matching handler consumes it in a second step.
UpdateTerm(i, m) ==
    /\ m.mterm > currentTerm[i]
    /\ currentTerm' = [currentTerm EXCEPT ![i] = m.mterm]
    /\ state'       = [state EXCEPT ![i] = Follower]
    /\ votedFor'    = [votedFor EXCEPT ![i] = Nil]
    /\ UNCHANGED <<messages, committed, candidateVars, leaderVars, logVars,
                   snapshotVars>>

\* Server i discards a message from an older term (responses included).
DropStaleMessage(i, m) ==
    /\ m.mterm < currentTerm[i]
    /\ Discard(m)
    /\ UNCHANGED <<committed, serverVars, candidateVars, leaderVars, logVars,
                   snapshotVars>>

\* The network duplicates a message.
DuplicateMessage(m) ==
    /\ Send(m)
    /\ UNCHANGED <<committed, serverVars, candidateVars, leaderVars, logVars,
                   snapshotVars>>

\* The network drops a message.
DropMessage(m) ==
    /\ Discard(m)
    /\ UNCHANGED <<committed, serverVars, candidateVars, leaderVars, logVars,
                   snapshotVars>>

----
\* Defines how the variables may transition.

\* Server i receives message m (its destination).
Receive(m) ==
    LET i == m.mdest
    IN  \/ UpdateTerm(i, m)
        \/ DropStaleMessage(i, m)
        \/ HandleRequestVoteRequest(i, m)
        \/ HandleRequestVoteResponse(i, m)
        \/ HandleAppendEntriesRequest(i, m)
        \/ HandleAppendEntriesResponse(i, m)
        \/ HandleInstallSnapshotRequest(i, m)
        \/ HandleInstallSnapshotResponse(i, m)

Next == \/ \E i \in Server : Restart(i)
        \/ \E i \in Server : Timeout(i)
        \/ \E i, j \in Server : RequestVote(i, j)
        \/ \E i \in Server : BecomeLeader(i)
        \/ \E i \in Server, v \in Value : ClientRequest(i, v)
        \/ \E i, s \in Server : ChangeMembership(i, s)
        \/ \E i \in Server : AdvanceCommitIndex(i)
        \/ \E i, j \in Server : AppendEntries(i, j)
        \/ \E i, j \in Server : SendSnapshot(i, j)
        \/ \E i \in Server : Snapshot(i)
        \/ \E m \in DOMAIN messages : Receive(m)
        \/ \E m \in DOMAIN messages : DuplicateMessage(m)
        \/ \E m \in DOMAIN messages : DropMessage(m)

\* The specification must start with the initial state and transition
\* according to Next.
Spec == Init /\ [][Next]_vars

----
\* Safety invariants.  Each is small and named, so a violation says which.

\* At most one leader per term.
ElectionSafety ==
    \A i, j \in Server :
        (/\ state[i] = Leader
         /\ state[j] = Leader
         /\ currentTerm[i] = currentTerm[j]) => i = j

\* If two logs have an entry with the same index and term, the logs are
\* identical up to that index (compared where both still hold entries).
LogMatching ==
    \A i, j \in Server :
        \A k \in (Max({snapshotIndex[i], snapshotIndex[j]}) + 1)..
                 Min({LastIndex(i), LastIndex(j)}) :
            EntryAt(i, k).term = EntryAt(j, k).term =>
                \A p \in (Max({snapshotIndex[i], snapshotIndex[j]}) + 1)..k :
                    EntryAt(i, p) = EntryAt(j, p)

\* A leader holds every entry committed in an earlier term.
LeaderCompleteness ==
    \A i \in Server :
        state[i] = Leader =>
            \A k \in DOMAIN committed :
                committed[k].commitTerm < currentTerm[i] =>
                    Holds(i, k, committed[k].entry)

\* No two servers have committed different entries at one index.
StateMachineSafety ==
    \A i, j \in Server :
        \A k \in (Max({snapshotIndex[i], snapshotIndex[j]}) + 1)..
                 Min({commitIndex[i], commitIndex[j]}) :
            EntryAt(i, k) = EntryAt(j, k)

\* Every committed entry (history variable) is still held by a quorum of
\* the configuration that committed it, every server's committed prefix and
\* snapshot agree with it, and no server believes more is committed than was.
CommittedEntriesNeverLost ==
    /\ \A k \in DOMAIN committed :
          IsQuorum({s \in Server : Holds(s, k, committed[k].entry)},
                   committed[k].quorumConfig)
    /\ \A i \in Server :
          /\ commitIndex[i] <= Len(committed)
          /\ snapshotIndex[i] <= commitIndex[i]
          /\ snapshotIndex[i] > 0 =>
                snapshotTerm[i] = committed[snapshotIndex[i]].entry.term
          /\ \A k \in (snapshotIndex[i] + 1)..commitIndex[i] :
                EntryAt(i, k) = committed[k].entry

\* Action properties.

\* A leader never removes or changes an entry of its log while it stays
\* leader in the same term (compacting into a snapshot is not removal).
LeaderAppendOnly ==
    [][\A i \in Server :
        (/\ state[i] = Leader
         /\ state'[i] = Leader
         /\ currentTerm'[i] = currentTerm[i]) =>
            /\ LastIndex(i)' >= LastIndex(i)
            /\ \A k \in (Max({snapshotIndex[i], snapshotIndex'[i]}) + 1)..
                        LastIndex(i) :
                  EntryAt(i, k)' = EntryAt(i, k)]_vars

\* commitIndex never decreases except when a server restarts (it is
\* volatile), and the committed history only grows.
MonotonicCommitIndex ==
    [][/\ \A i \in Server :
            commitIndex'[i] >= commitIndex[i] \/ Restart(i)
       /\ Len(committed') >= Len(committed)
       /\ \A k \in DOMAIN committed : committed'[k] = committed[k]]_vars

\* No server's term ever decreases.
MonotonicTerm ==
    [][\A i \in Server : currentTerm'[i] >= currentTerm[i]]_vars

\* Reachability checks: TLC must report each of these as VIOLATED; a model
\* in which one holds cannot reach the situation it names.

\* A leader is elected.
NR_LeaderElected == \A i \in Server : state[i] /= Leader

\* A client entry ("normal") commits.
NR_EntryCommitted ==
    \A k \in DOMAIN committed : committed[k].entry.kind /= "normal"

\* A membership change completes: a configuration entry commits.
NR_MembershipChanged ==
    \A k \in DOMAIN committed : committed[k].entry.kind /= "config"

\* A follower installs a snapshot sent by the leader
\* (HandleInstallSnapshotRequest took effect): only installation moves
\* snapshotIndex past the old commitIndex.
NR_SnapshotInstalled ==
    [][\A i \in Server : ~(snapshotIndex'[i] > commitIndex[i])]_vars

=============================================================================
