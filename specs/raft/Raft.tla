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
(*   - durability: each server's persistent state (term, vote, log,        *)
(*     snapshot) has a durable copy, advanced only by PersistState, and an  *)
(*     outbox of messages that may leave only once their state is durable; *)
(*     Restart brings back what a crash can leave (see Restart);           *)
(*   - optimistic pipelining of AppendEntries (nextIndex advances on send);*)
(*   - pre-vote (Ongaro's thesis 9.6): a PreCandidate asks for pre-votes   *)
(*     for currentTerm + 1 without changing its term, and becomes a        *)
(*     candidate only with a quorum of grants;                             *)
(*   - check-quorum and the leader lease (thesis 6.2, etcd's checkQuorum): *)
(*     a leader may step down (StepDown), and a server that heard from a   *)
(*     leader recently may drop a vote request of a higher term            *)
(*     (DropVoteRequestInLease).  Time is not modelled, so both are        *)
(*     nondeterministic: safe whenever they happen.                        *)
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

\* TRUE: every action is durable the moment it happens (no outbox, Restart
\* keeps the whole persistent state): the bounded models that do not study
\* crashes use it, because it adds no states.  FALSE: persistence is a step of
\* its own (PersistState) and a crash can lose what was not yet persisted;
\* trace validation and the crash models use it.
CONSTANT AtomicPersist

ASSUME InitConfig \subseteq Server /\ InitConfig /= {}
ASSUME AtomicPersist \in BOOLEAN
ASSUME Nil \notin Server /\ Nil \notin Value

\* Server roles.  Strings, as they appear in trace events.
Follower == "follower"
PreCandidate == "pre_candidate"
Candidate == "candidate"
Leader == "leader"
Roles == {Follower, PreCandidate, Candidate, Leader}

\* Entry kinds.  A "normal" entry carries a Value, a "config" entry carries
\* the set of members of the new configuration, a "noop" entry carries Nil.
EntryKinds == {"normal", "noop", "config"}

\* Message types, named as the `type` field of a trace event's `msg`.
MessageTypes == {"RequestVote", "RequestVoteResponse", "PreVote", "PreVoteResponse",
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

\* The following variables are used only on candidates and pre-candidates
\* (a pre-candidate counts pre-votes in them, as etcd does; BecomeCandidate
\* starts them afresh for the votes):
\* The set of servers from which the candidate has received a
\* RequestVoteResponse (PreVoteResponse) in its current term.
VARIABLE votesResponded
\* The set of servers from which the candidate has received a vote
\* (pre-vote) in its current term.
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

\* Durability.  durable[i] is what server i's disk holds: the superblock's
\* term and vote, the snapshot, and the log after it (same layout as log).
\* It changes only by PersistState, Restart and Snapshot (the runtime writes a
\* local snapshot before the core compacts).  Under AtomicPersist it is never
\* read and keeps its initial value.
VARIABLE durable
\* outbox[i]: a bag of messages i has produced whose sending depends on state
\* that is not durable yet (every response; a request while i's term or vote
\* is not durable).  PersistState releases it to the network; a crash loses
\* it.  Always empty under AtomicPersist.
VARIABLE outbox
persistVars == <<durable, outbox>>
PersistVarsTypeOK ==
    /\ \A i \in Server :
          /\ durable[i].term \in Nat
          /\ durable[i].vote \in Server \cup {Nil}
          /\ \A p \in DOMAIN durable[i].log : durable[i].log[p] \in Entry
          /\ durable[i].snapshotIndex \in Nat
          /\ durable[i].snapshotTerm \in Nat
          /\ durable[i].snapshotConfig \in (SUBSET Server) \ {{}}
    /\ \A i \in Server : \A m \in DOMAIN outbox[i] :
          /\ outbox[i][m] \in Nat \ {0}
          /\ m.mtype \in MessageTypes
          /\ m.msource = i

\* All variables; used for stuttering (asserting state hasn't changed).
vars == <<messages, committed, serverVars, candidateVars, leaderVars,
          logVars, snapshotVars, persistVars>>

\* Every variable has its declared shape.
TypeOK ==
    /\ MessagesTypeOK
    /\ CommittedTypeOK
    /\ ServerVarsTypeOK
    /\ LogVarsTypeOK
    /\ SnapshotVarsTypeOK
    /\ CandidateVarsTypeOK
    /\ LeaderVarsTypeOK
    /\ PersistVarsTypeOK

----
\* Helpers

Max(S) == CHOOSE x \in S : \A y \in S : y <= x
Min(S) == CHOOSE x \in S : \A y \in S : x <= y

\* A strict majority of configuration c.
IsQuorum(S, c) == 2 * Cardinality(S \cap c) > Cardinality(c)

\* The durable log of i, in absolute indexes.
DurableLastIndex(i) == durable[i].snapshotIndex + Len(durable[i].log)
DurableEntryAt(i, k) == durable[i].log[k - durable[i].snapshotIndex]

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

\* All copies of bag b added to bag msgs.
WithMessages(b, msgs) ==
    [m \in DOMAIN msgs \cup DOMAIN b |->
        (IF m \in DOMAIN msgs THEN msgs[m] ELSE 0)
        + (IF m \in DOMAIN b THEN b[m] ELSE 0)]

EmptyBag == [m \in {} |-> 0]

\* Add a message to the bag of messages.
Send(m) == messages' = WithMessage(m, messages)

\* Server i's persistent state as it is in memory, in the layout of durable.
Volatile(i) == [term           |-> currentTerm[i],
                vote           |-> votedFor[i],
                log            |-> log[i],
                snapshotIndex  |-> snapshotIndex[i],
                snapshotTerm   |-> snapshotTerm[i],
                snapshotConfig |-> snapshotConfig[i]]

\* Server i's term and vote are durable (the core's `_persisted`).
TermVoteDurable(i) ==
    \/ AtomicPersist
    \/ /\ durable[i].term = currentTerm[i]
       /\ durable[i].vote = votedFor[i]

\* A request (RequestVote, AppendEntries, InstallSnapshot) from m.msource:
\* straight to the network when the sender's term and vote are durable (the
\* message promises nothing else), else into its outbox (RaftCore._send).
SendRequest(m) ==
    LET i == m.msource
    IN  IF TermVoteDurable(i)
        THEN Send(m) /\ UNCHANGED outbox
        ELSE /\ outbox' = [outbox EXCEPT ![i] = WithMessage(m, @)]
             /\ UNCHANGED messages

\* Remove a message from the bag of messages.  Used when a server is done
\* processing a message.
Discard(m) == messages' = WithoutMessage(m, messages)

\* The request is consumed; the response waits in the responder's outbox
\* until PersistState: a response acknowledges the responder's state (a vote,
\* appended entries), which must be durable before anyone relies on it.
Reply(response, request) ==
    IF AtomicPersist
    THEN /\ messages' = WithMessage(response, WithoutMessage(request, messages))
         /\ UNCHANGED outbox
    ELSE /\ messages' = WithoutMessage(request, messages)
         /\ outbox' = [outbox EXCEPT ![response.msource] = WithMessage(response, @)]

\* The reply to a RequestVote (a bounded model substitutes a mutant that sends
\* the vote before it is persisted).
ReplyVote(response, request) == Reply(response, request)

\* Server i's view of index k: whether it holds the committed entry there,
\* either in its log or covered by its snapshot.
Holds(i, k, entry) ==
    \/ k <= snapshotIndex[i]
    \/ /\ k <= LastIndex(i)
       /\ EntryAt(i, k) = entry

\* The length of the prefix of i's log that is durable: the durable and the
\* volatile log agree up to it (the core's stable_index).  While a received
\* snapshot is not persisted yet only the durable snapshot's index counts.
StableIndex(i) ==
    LET si == snapshotIndex[i]
    IN  IF AtomicPersist THEN LastIndex(i)
        ELSE IF si /= durable[i].snapshotIndex THEN durable[i].snapshotIndex
        ELSE Max({k \in si..Min({LastIndex(i), DurableLastIndex(i)}) :
                    \A p \in (si + 1)..k : DurableEntryAt(i, p) = EntryAt(i, p)})

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
InitPersistVars ==
    /\ durable = [i \in Server |->
                    [term |-> 0, vote |-> Nil, log |-> << >>, snapshotIndex |-> 0,
                     snapshotTerm |-> 0, snapshotConfig |-> InitConfig]]
    /\ outbox = [i \in Server |-> EmptyBag]
Init == /\ messages = EmptyBag
        /\ committed = << >>
        /\ InitPersistVars
        /\ InitServerVars
        /\ InitCandidateVars
        /\ InitLeaderVars
        /\ InitLogVars
        /\ InitSnapshotVars

----
\* Define state transitions

\* Server i makes its state durable: the runtime has persisted a Ready (in
\* order: received snapshot, WAL truncate/append/commit, superblock term and
\* vote) and released the messages that waited for it.  The core reports it
\* at the start of advance(rd); the runtime sends messages_after_persist
\* right before calling advance() with no await in between, so no peer can
\* receive one of them before this step is in the trace.
PersistState(i) ==
    /\ ~AtomicPersist
    /\ durable' = [durable EXCEPT ![i] = Volatile(i)]
    /\ messages' = WithMessages(outbox[i], messages)
    /\ outbox' = [outbox EXCEPT ![i] = EmptyBag]
    /\ UNCHANGED <<committed, serverVars, candidateVars, leaderVars, logVars,
                   snapshotVars>>

\* Server i crashes and restarts as a follower; commitIndex falls back to the
\* snapshot and candidate and leader state are lost.  Under AtomicPersist
\* term, vote, log and snapshot are kept as they are.  Otherwise they come
\* back as the disk has them, and the outbox is lost.  A crash can interrupt
\* the persist of a Ready (mox/node/runtime.py _handle_ready: snapshot file,
\* then WAL reset/drop, WAL truncate, WAL append + commit, then superblock
\* term/vote; recovery: Node.open, _reconcile_wal, RaftCore.__init__), so the
\* disk holds, with D = durable[i] and V = the volatile state:
\*   snapshot  D's; V's when a received one is being installed (written
\*             first); or a local compaction of a committed durable prefix
\*             (the runtime writes the file before telling the core);
\*   log       D's, or, once the snapshot is written, a prefix of V's log no
\*             shorter than the durable prefix (truncated, partly appended);
\*             recovery keeps the part after the snapshot if it holds the
\*             snapshot's last entry, else discards it (_reconcile_wal);
\*   term/vote D's, or V's only when everything before them was written;
\*             the core then adopts the last entry's term with no vote if
\*             that is newer (safe: a vote leaves only after it is durable).
\* durable[i] becomes what the disk holds (the superblock's term and vote).
Restart(i) ==
    /\ state'          = [state EXCEPT ![i] = Follower]
    /\ votesResponded' = [votesResponded EXCEPT ![i] = {}]
    /\ votesGranted'   = [votesGranted EXCEPT ![i] = {}]
    /\ nextIndex'      = [nextIndex EXCEPT ![i] = [j \in Server |-> 1]]
    /\ matchIndex'     = [matchIndex EXCEPT ![i] = [j \in Server |-> 0]]
    /\ IF AtomicPersist
       THEN /\ commitIndex' = [commitIndex EXCEPT ![i] = snapshotIndex[i]]
            /\ UNCHANGED <<currentTerm, votedFor, log, snapshotVars,
                           persistVars>>
       ELSE LET d    == durable[i]
                dsnap == [index |-> d.snapshotIndex, term |-> d.snapshotTerm,
                          config |-> d.snapshotConfig]
                vsnap == [index |-> snapshotIndex[i], term |-> snapshotTerm[i],
                          config |-> snapshotConfig[i]]
                installing == snapshotIndex[i] /= d.snapshotIndex
                compactions ==
                    IF installing THEN {}
                    ELSE {[index |-> s, term |-> TermAt(i, s),
                           config |-> ConfigAt(i, s)] :
                          s \in (snapshotIndex[i] + 1)..
                                Min({commitIndex[i], StableIndex(i)})}
                \* A log as [base, entries]: entries after index base.
                dlog == [base |-> d.snapshotIndex, entries |-> d.log]
                vlogs == {[base |-> snapshotIndex[i],
                           entries |-> SubSeq(log[i], 1, k - snapshotIndex[i])] :
                          k \in Max({StableIndex(i), snapshotIndex[i]})..
                                LastIndex(i)}
                \* The log after snapshot sn that recovery makes of lg.
                Reconcile(sn, lg) ==
                    IF sn.index = lg.base THEN lg.entries
                    ELSE IF \/ lg.base + Len(lg.entries) < sn.index
                            \/ lg.entries[sn.index - lg.base].term /= sn.term
                    THEN << >>
                    ELSE SubSeq(lg.entries, sn.index - lg.base + 1,
                                Len(lg.entries))
            IN  \E sn \in {dsnap, vsnap} \cup compactions,
                  lg \in {dlog} \cup vlogs :
                /\ sn.index >= lg.base
                \* The WAL is written only after a received snapshot.
                /\ (installing /\ sn = dsnap) => lg = dlog
                /\ LET newLog  == Reconcile(sn, lg)
                       newLast == IF newLog = << >> THEN sn.term
                                  ELSE newLog[Len(newLog)].term
                       written == sn = vsnap /\ newLog = log[i]
                   IN  \E hs \in {<<d.term, d.vote>>}
                                 \cup (IF written
                                       THEN {<<currentTerm[i], votedFor[i]>>}
                                       ELSE {}) :
                       /\ currentTerm' = [currentTerm EXCEPT ![i] =
                                             Max({hs[1], newLast})]
                       /\ votedFor' = [votedFor EXCEPT ![i] =
                                          IF newLast > hs[1] THEN Nil ELSE hs[2]]
                       /\ log' = [log EXCEPT ![i] = newLog]
                       /\ snapshotIndex' = [snapshotIndex EXCEPT ![i] = sn.index]
                       /\ snapshotTerm' = [snapshotTerm EXCEPT ![i] = sn.term]
                       /\ snapshotConfig' = [snapshotConfig EXCEPT ![i] =
                                                sn.config]
                       /\ commitIndex' = [commitIndex EXCEPT ![i] = sn.index]
                       /\ durable' = [durable EXCEPT ![i] =
                                        [term |-> hs[1], vote |-> hs[2],
                                         log |-> newLog,
                                         snapshotIndex |-> sn.index,
                                         snapshotTerm |-> sn.term,
                                         snapshotConfig |-> sn.config]]
                       /\ outbox' = [outbox EXCEPT ![i] = EmptyBag]
    /\ UNCHANGED <<messages, committed>>

\* Server i may run for election: it is in its own configuration or in the
\* one at its commit index (see Timeout).
MayRun(i) == i \in Config(i) \/ i \in ConfigAt(i, commitIndex[i])

\* Server i times out and starts a new election (without pre-vote: the core
\* with pre_vote off).  A server times out only
\* while it is in its own configuration or in the one at its commit index:
\* a leader that appended its own removal and was deposed before committing
\* it may hold the only up-to-date log, so it must be able to run (the core
\* additionally asks for evidence of that, RaftCore.promotable).  Its own
\* vote does not count toward a configuration without it (BecomeLeader).
Timeout(i) ==
    /\ state[i] \in {Follower, Candidate}
    /\ MayRun(i)
    /\ currentTerm'    = [currentTerm EXCEPT ![i] = currentTerm[i] + 1]
    /\ state'          = [state EXCEPT ![i] = Candidate]
    /\ votedFor'       = [votedFor EXCEPT ![i] = i]
    /\ votesResponded' = [votesResponded EXCEPT ![i] = {i}]
    /\ votesGranted'   = [votesGranted EXCEPT ![i] = {i}]
    /\ UNCHANGED <<persistVars, messages, committed, leaderVars, logVars, snapshotVars>>

\* Server i times out and starts a pre-vote (a follower, a pre-candidate whose
\* pre-vote went nowhere, or a candidate whose election did): it will ask
\* for pre-votes for currentTerm + 1.  Its term and vote do not change, so a
\* server that cannot win (a stale log, a partition) disturbs nobody.
StartPreVote(i) ==
    /\ state[i] \in {Follower, PreCandidate, Candidate}
    /\ MayRun(i)
    /\ state'          = [state EXCEPT ![i] = PreCandidate]
    /\ votesResponded' = [votesResponded EXCEPT ![i] = {i}]
    /\ votesGranted'   = [votesGranted EXCEPT ![i] = {i}]
    /\ UNCHANGED <<persistVars, messages, committed, currentTerm, votedFor,
                   leaderVars, logVars, snapshotVars>>

\* Pre-candidate i sends j a PreVote request for term currentTerm[i] + 1.
PreVote(i, j) ==
    /\ state[i] = PreCandidate
    /\ j \in Config(i) \ {i}
    /\ j \notin votesResponded[i]
    /\ SendRequest([mtype         |-> "PreVote",
                    mterm         |-> currentTerm[i] + 1,
                    mlastLogTerm  |-> LastTerm(i),
                    mlastLogIndex |-> LastIndex(i),
                    msource       |-> i,
                    mdest         |-> j])
    /\ UNCHANGED <<durable, committed, serverVars, candidateVars, leaderVars, logVars,
                   snapshotVars>>

\* Pre-candidate i has pre-votes from a quorum of its configuration and
\* starts the real election: term + 1, candidate, votes for itself.
BecomeCandidate(i) ==
    /\ state[i] = PreCandidate
    /\ MayRun(i)
    /\ IsQuorum(votesGranted[i], Config(i))
    /\ currentTerm'    = [currentTerm EXCEPT ![i] = currentTerm[i] + 1]
    /\ state'          = [state EXCEPT ![i] = Candidate]
    /\ votedFor'       = [votedFor EXCEPT ![i] = i]
    /\ votesResponded' = [votesResponded EXCEPT ![i] = {i}]
    /\ votesGranted'   = [votesGranted EXCEPT ![i] = {i}]
    /\ UNCHANGED <<persistVars, messages, committed, leaderVars, logVars, snapshotVars>>

\* Leader i steps down to follower (check-quorum: it did not hear from a
\* quorum of its configuration within an election timeout; time is not
\* modelled, so the spec lets it happen at any moment).  Its term and vote
\* stay.
StepDown(i) ==
    /\ state[i] = Leader
    /\ state' = [state EXCEPT ![i] = Follower]
    /\ UNCHANGED <<persistVars, messages, committed, currentTerm, votedFor,
                   candidateVars, leaderVars, logVars, snapshotVars>>

\* Candidate i sends j a RequestVote request.
RequestVote(i, j) ==
    /\ state[i] = Candidate
    /\ j \in Config(i) \ {i}
    /\ j \notin votesResponded[i]
    /\ SendRequest([mtype         |-> "RequestVote",
             mterm         |-> currentTerm[i],
             mlastLogTerm  |-> LastTerm(i),
             mlastLogIndex |-> LastIndex(i),
             msource       |-> i,
             mdest         |-> j])
    /\ UNCHANGED <<durable, committed, serverVars, candidateVars, leaderVars, logVars,
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
    /\ UNCHANGED <<persistVars, messages, committed, currentTerm, votedFor, candidateVars,
                   commitIndex, snapshotVars>>

\* Leader i receives a client request to add v to the log.
ClientRequest(i, v) ==
    /\ state[i] = Leader
    /\ log' = [log EXCEPT ![i] =
                  Append(log[i], [term |-> currentTerm[i], kind |-> "normal",
                                  value |-> v])]
    /\ UNCHANGED <<persistVars, messages, committed, serverVars, candidateVars, leaderVars,
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
    /\ UNCHANGED <<persistVars, messages, committed, serverVars, candidateVars, leaderVars,
                   commitIndex, snapshotVars>>

\* Leader i advances its commitIndex to an index of an entry of its own term
\* that a quorum of its configuration holds (the leader counts itself only
\* while it is a member).  The highest such index is the usual choice; any
\* one is allowed.  The leader counts itself only up to its durable log
\* (StableIndex): it has not acknowledged entries it could lose in a crash.  The
\* newly committed entries are recorded in the history variable.  A leader
\* that is not a member of its configuration steps down once that
\* configuration entry is committed.
AdvanceCommitIndex(i) ==
    /\ state[i] = Leader
    /\ LET conf == Config(i)
           \* The servers of conf that hold index k.
           Agree(k) == {j \in conf \ {i} : matchIndex[i][j] >= k}
                       \cup (IF i \in conf /\ k <= StableIndex(i) THEN {i}
                              ELSE {})
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
    /\ UNCHANGED <<persistVars, messages, currentTerm, votedFor, candidateVars, leaderVars,
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
        IN  /\ SendRequest([mtype          |-> "AppendEntries",
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
    /\ UNCHANGED <<durable, committed, serverVars, candidateVars, matchIndex, logVars,
                   snapshotVars>>

\* Leader i sends j its snapshot because the entries j needs next have been
\* compacted away.
SendSnapshot(i, j) ==
    /\ state[i] = Leader
    /\ j \in Config(i) \ {i}
    /\ nextIndex[i][j] <= snapshotIndex[i]
    /\ SendRequest([mtype           |-> "InstallSnapshot",
             mterm           |-> currentTerm[i],
             msnapshotIndex  |-> snapshotIndex[i],
             msnapshotTerm   |-> snapshotTerm[i],
             msnapshotConfig |-> snapshotConfig[i],
             msource         |-> i,
             mdest           |-> j])
    /\ nextIndex' = [nextIndex EXCEPT ![i][j] = snapshotIndex[i] + 1]
    /\ UNCHANGED <<durable, committed, serverVars, candidateVars, matchIndex, logVars,
                   snapshotVars>>

\* Server i compacts its log up to some committed index s.  Without
\* AtomicPersist only a durable entry is compacted, and the compaction is
\* durable at once: the runtime writes the snapshot file before it tells the
\* core, and drops the WAL prefix after (a crash in between is covered by
\* Restart's local compaction).
Snapshot(i) ==
    \E s \in (snapshotIndex[i] + 1)..commitIndex[i] :
        /\ snapshotIndex'  = [snapshotIndex EXCEPT ![i] = s]
        /\ snapshotTerm'   = [snapshotTerm EXCEPT ![i] = TermAt(i, s)]
        /\ snapshotConfig' = [snapshotConfig EXCEPT ![i] = ConfigAt(i, s)]
        /\ log' = [log EXCEPT ![i] =
                      SubSeq(log[i], s - snapshotIndex[i] + 1, Len(log[i]))]
        /\ IF AtomicPersist THEN UNCHANGED durable
           ELSE /\ durable[i].snapshotIndex = snapshotIndex[i]
                /\ s <= StableIndex(i)
                /\ durable' = [durable EXCEPT ![i].snapshotIndex = s,
                                             ![i].snapshotTerm = TermAt(i, s),
                                             ![i].snapshotConfig = ConfigAt(i, s),
                                             ![i].log =
                                   SubSeq(@, s - snapshotIndex[i] + 1, Len(@))]
        /\ UNCHANGED <<messages, committed, serverVars, candidateVars,
                       leaderVars, commitIndex, outbox>>

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
           /\ ReplyVote([mtype        |-> "RequestVoteResponse",
                     mterm        |-> currentTerm[i],
                     mvoteGranted |-> grant,
                     msource      |-> i,
                     mdest        |-> j],
                     m)
    /\ UNCHANGED <<durable, committed, currentTerm, state, candidateVars, leaderVars,
                   logVars, snapshotVars>>

\* Server i receives a PreVote request from server j, of any term (no
\* UpdateTerm first: a pre-vote moves no term).  It grants iff the request is
\* for a term above its own and j's log is at least as up-to-date; its term
\* and vote do not change.  The answer carries the request's term when
\* granted, and i's own term when not, so a sender behind catches up
\* (UpdateTerm on the answer).  A server that heard from a leader recently
\* drops the request instead (DropVoteRequestInLease).
HandlePreVoteRequest(i, m) ==
    /\ m.mtype = "PreVote"
    /\ LET j     == m.msource
           logOk == \/ m.mlastLogTerm > LastTerm(i)
                    \/ /\ m.mlastLogTerm = LastTerm(i)
                       /\ m.mlastLogIndex >= LastIndex(i)
           grant == m.mterm > currentTerm[i] /\ logOk
       IN  Reply([mtype        |-> "PreVoteResponse",
                  mterm        |-> IF grant THEN m.mterm ELSE currentTerm[i],
                  mvoteGranted |-> grant,
                  msource      |-> i,
                  mdest        |-> j],
                  m)
    /\ UNCHANGED <<durable, committed, serverVars, candidateVars, leaderVars,
                   logVars, snapshotVars>>

\* Server i receives a PreVote response from server j.  A rejection of a
\* higher term is UpdateTerm's (first), one of an older term
\* DropStaleMessage's; a grant carries currentTerm + 1 of the pre-vote it
\* answers and moves no term.  A pre-candidate counts a grant for
\* currentTerm[i] + 1 and a rejection in its term; anything else (an
\* answer to an earlier round, or to a server that is no longer a
\* pre-candidate) is consumed with no effect.
HandlePreVoteResponse(i, m) ==
    /\ m.mtype = "PreVoteResponse"
    /\ m.mterm >= currentTerm[i]
    /\ m.mterm > currentTerm[i] => m.mvoteGranted
    /\ LET j == m.msource
       IN  IF /\ state[i] = PreCandidate
              /\ \/ m.mvoteGranted /\ m.mterm = currentTerm[i] + 1
                 \/ ~m.mvoteGranted
           THEN /\ votesResponded' = [votesResponded EXCEPT ![i] = @ \cup {j}]
                /\ votesGranted'   = IF m.mvoteGranted
                                     THEN [votesGranted EXCEPT ![i] = @ \cup {j}]
                                     ELSE votesGranted
           ELSE UNCHANGED candidateVars
    /\ Discard(m)
    /\ UNCHANGED <<persistVars, committed, serverVars, leaderVars, logVars, snapshotVars>>

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
    /\ UNCHANGED <<persistVars, committed, serverVars, leaderVars, logVars, snapshotVars>>

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
    /\ UNCHANGED <<durable, committed, currentTerm, votedFor, candidateVars, leaderVars,
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
    /\ UNCHANGED <<persistVars, committed, serverVars, candidateVars, logVars, snapshotVars>>

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
    /\ UNCHANGED <<durable, committed, currentTerm, votedFor, candidateVars, leaderVars>>

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
    /\ UNCHANGED <<persistVars, committed, serverVars, candidateVars, logVars, snapshotVars>>

\* Server i sees a message with a term newer than its own: it adopts the
\* term, becomes a follower and forgets its vote.  The message stays in the
\* network; the matching handler consumes it in a second step.  A PreVote and
\* a granted PreVoteResponse carry a future term and move no term.
UpdateTerm(i, m) ==
    /\ m.mterm > currentTerm[i]
    /\ m.mtype /= "PreVote"
    /\ m.mtype = "PreVoteResponse" => ~m.mvoteGranted
    /\ currentTerm' = [currentTerm EXCEPT ![i] = m.mterm]
    /\ state'       = [state EXCEPT ![i] = Follower]
    /\ votedFor'    = [votedFor EXCEPT ![i] = Nil]
    /\ UNCHANGED <<persistVars, messages, committed, candidateVars, leaderVars, logVars,
                   snapshotVars>>

\* Server i discards a message from an older term (responses included; a
\* PreVote of an older term is answered instead: HandlePreVoteRequest).
DropStaleMessage(i, m) ==
    /\ m.mterm < currentTerm[i]
    /\ m.mtype /= "PreVote"
    /\ Discard(m)
    /\ UNCHANGED <<persistVars, committed, serverVars, candidateVars, leaderVars, logVars,
                   snapshotVars>>

\* Server i answers an AppendEntries of an older term with its own term
\* (the core with pre-vote or check-quorum; etcd does the same).  A server
\* can be stuck at a term above the leader's: its election went as far as
\* term + 1 and lost, and its vote requests are dropped in lease.  It drops
\* the leader's messages as stale, so only this answer (an UpdateTerm at the
\* old leader) lets a new election include it.  The response promises
\* nothing: its matchIndex is 0 and a leader of that term does not exist.
HandleStaleAppendEntries(i, m) ==
    /\ m.mtype = "AppendEntries"
    /\ m.mterm < currentTerm[i]
    /\ Reply([mtype       |-> "AppendEntriesResponse",
              mterm       |-> currentTerm[i],
              msuccess    |-> FALSE,
              mmatchIndex |-> 0,
              msource     |-> i,
              mdest       |-> m.msource],
              m)
    /\ UNCHANGED <<durable, committed, serverVars, candidateVars, leaderVars, logVars,
                   snapshotVars>>

\* Server i drops a RequestVote or PreVote of a higher term without changing
\* anything: it heard from a leader within its election timeout (the lease,
\* etcd's inLease; with check-quorum, a leader is in its own lease).  Time is
\* not modelled, so the spec lets a server do it at any moment: it is a
\* message loss the receiver performs, which no safety property can notice.
DropVoteRequestInLease(i, m) ==
    /\ m.mtype \in {"RequestVote", "PreVote"}
    /\ m.mterm > currentTerm[i]
    /\ Discard(m)
    /\ UNCHANGED <<persistVars, committed, serverVars, candidateVars, leaderVars, logVars,
                   snapshotVars>>

\* The network duplicates a message.
\* A message still in its sender's outbox may be duplicated or dropped too: the
\* simulated network decides a message's fate when the runtime hands it over,
\* which is after the persist but before the core's PersistState step.  Both
\* are equivalent to PersistState followed by the fault (a copy more, or one
\* never delivered).
DuplicateMessage(m) ==
    /\ IF m \in DOMAIN messages
       THEN Send(m) /\ UNCHANGED outbox
       ELSE /\ m \in DOMAIN outbox[m.msource]
            /\ outbox' = [outbox EXCEPT ![m.msource] = WithMessage(m, @)]
            /\ UNCHANGED messages
    /\ UNCHANGED <<durable, committed, serverVars, candidateVars, leaderVars,
                   logVars, snapshotVars>>

\* The network drops a message (see DuplicateMessage for one in an outbox).
DropMessage(m) ==
    /\ \/ /\ m \in DOMAIN messages
          /\ Discard(m)
          /\ UNCHANGED outbox
       \/ /\ m \in DOMAIN outbox[m.msource]
          /\ outbox' = [outbox EXCEPT ![m.msource] = WithoutMessage(m, @)]
          /\ UNCHANGED messages
    /\ UNCHANGED <<durable, committed, serverVars, candidateVars, leaderVars,
                   logVars, snapshotVars>>

----
\* Defines how the variables may transition.

\* Server i receives message m (its destination).
Receive(m) ==
    LET i == m.mdest
    IN  \/ UpdateTerm(i, m)
        \/ DropStaleMessage(i, m)
        \/ DropVoteRequestInLease(i, m)
        \/ HandleStaleAppendEntries(i, m)
        \/ HandlePreVoteRequest(i, m)
        \/ HandlePreVoteResponse(i, m)
        \/ HandleRequestVoteRequest(i, m)
        \/ HandleRequestVoteResponse(i, m)
        \/ HandleAppendEntriesRequest(i, m)
        \/ HandleAppendEntriesResponse(i, m)
        \/ HandleInstallSnapshotRequest(i, m)
        \/ HandleInstallSnapshotResponse(i, m)

Next == \/ \E i \in Server : Restart(i)
        \/ \E i \in Server : PersistState(i)
        \/ \E i \in Server : Timeout(i)
        \/ \E i \in Server : StartPreVote(i)
        \/ \E i, j \in Server : PreVote(i, j)
        \/ \E i \in Server : BecomeCandidate(i)
        \/ \E i \in Server : StepDown(i)
        \/ \E i, j \in Server : RequestVote(i, j)
        \/ \E i \in Server : BecomeLeader(i)
        \/ \E i \in Server, v \in Value : ClientRequest(i, v)
        \/ \E i, s \in Server : ChangeMembership(i, s)
        \/ \E i \in Server : AdvanceCommitIndex(i)
        \/ \E i, j \in Server : AppendEntries(i, j)
        \/ \E i, j \in Server : SendSnapshot(i, j)
        \/ \E i \in Server : Snapshot(i)
        \/ \E m \in DOMAIN messages : Receive(m)
        \/ \E m \in DOMAIN messages \cup UNION {DOMAIN outbox[i] : i \in Server} :
              DuplicateMessage(m)
        \/ \E m \in DOMAIN messages \cup UNION {DOMAIN outbox[i] : i \in Server} :
              DropMessage(m)

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

\* No server's durable term ever decreases; its term in memory decreases only
\* when a crash loses a term that was not durable yet.
MonotonicTerm ==
    [][\A i \in Server :
         /\ durable'[i].term >= durable[i].term
         /\ currentTerm'[i] >= currentTerm[i] \/ Restart(i)]_vars

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
