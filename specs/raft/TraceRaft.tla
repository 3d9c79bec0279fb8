------------------------------ MODULE TraceRaft ------------------------------
(***************************************************************************)
(* Trace validation of the Raft implementation against Raft.tla.           *)
(*                                                                         *)
(* A trace (NDJSON, one line per spec action, specs/README.md) is turned   *)
(* by checker/conformance.py into the generated module TraceData:          *)
(*   the traces      as flat integer tables, decoded below into TraceLogs: *)
(*                   per trace a tuple of records [action, node, msg,      *)
(*                   state] (see the table below);                         *)
(*   TraceServer     the servers of the run (the constant Server);         *)
(*   TraceInitConfig the initial configuration (the constant InitConfig);  *)
(*   TraceStuckAt    per trace, the line to diagnose (0: none).            *)
(* Init picks one trace t and starts at its line l = 1; each step takes    *)
(* the spec's own action named by line l, constrained by what the line     *)
(* says, and moves to l + 1.  A trace is accepted iff some behaviour       *)
(* reaches l = Len(TraceLog) + 1: then every line was a step of Raft.tla.  *)
(* A behaviour that cannot take line l is stuck: the trace is rejected,    *)
(* and the furthest l reached names the line.                              *)
(*                                                                         *)
(* Mapping from trace fields to spec variables (i = the line's `node`):    *)
(*                                                                         *)
(*   trace field             spec                                          *)
(*   ----------------------  --------------------------------------------  *)
(*   action                  the action taken (one IsX per action, below)  *)
(*   node                    i, the acting server                          *)
(*   state.term              currentTerm'[i]                               *)
(*   state.role              state'[i] (same strings)                      *)
(*   state.voted_for         votedFor'[i] (null -> Nil)                    *)
(*   state.commit_index      commitIndex'[i]                               *)
(*   state.last_index        LastIndex(i) after the step                   *)
(*   state.last_term         LastTerm(i) after the step                    *)
(*   state.snapshot_index    snapshotIndex'[i]                             *)
(*   state.snapshot_term     snapshotTerm'[i]                              *)
(*   state.config            Config(i) after the step                      *)
(*   msg.type                m.mtype                                       *)
(*   msg.src / dst / term    m.msource / m.mdest / m.mterm                 *)
(*   msg.last_log_term/index m.mlastLogTerm / m.mlastLogIndex (RequestVote,*)
(*                           PreVote)                                      *)
(*   msg.vote_granted        m.mvoteGranted (both responses)               *)
(*   msg.prev_log_index/term m.mprevLogIndex / m.mprevLogTerm              *)
(*   msg.entries [t, k, c]   m.mentries: [term |-> t, kind |-> k, value]   *)
(*                           value: TheValue (normal), Nil (noop), c       *)
(*                           (config members)                              *)
(*   msg.leader_commit       m.mcommitIndex                                *)
(*   msg.success             m.msuccess                                    *)
(*   msg.match_index         m.mmatchIndex                                 *)
(*   msg.snapshot_index/term m.msnapshotIndex / m.msnapshotTerm            *)
(*   msg.config              m.msnapshotConfig                             *)
(*   (not logged)            messages, outbox (see below), durable,        *)
(*                           nextIndex, matchIndex, votesResponded,        *)
(*                           votesGranted, committed: the spec's own       *)
(*                           actions determine them                        *)
(*                                                                         *)
(* What the implementation does not log, and how it is handled:            *)
(*  - Messages in flight.  The spec's bag `messages` is reconstructed: a   *)
(*    send line (RequestVote, PreVote, AppendEntries, SendSnapshot) must   *)
(*    add                                                                  *)
(*    exactly the logged message to it or, while the sender's term or vote *)
(*    is not durable, to the sender's outbox; a response enters the        *)
(*    outbox through the handler action that replies (as in the spec) and *)
(*    the network at the responder's next PersistState line (the core     *)
(*    emits it at the start of advance(rd)); a receive line                *)
(*    (UpdateTerm, Handle*, DropStaleMessage) must find its message in the *)
(*    bag, addressed to the receiver.  Messages never delivered simply     *)
(*    stay in the bag (the spec allows a message to be delayed forever).   *)
(*  - Message loss and duplication are DropMessage/DuplicateMessage lines  *)
(*    written by the simulated network; a message can leave the bag only   *)
(*    through a line that names it.                                        *)
(*  - Client values and snapshot data are not logged: Value is a single    *)
(*    model value, so a normal entry is identified by its index and term,  *)
(*    which by the spec's Log Matching property determines it.             *)
(*  - Durable state.  A PersistState line copies the node's state to       *)
(*    durable; a Restart line's state (term, vote, last index and term,    *)
(*    snapshot) picks which partial persist the crash left, among those    *)
(*    Raft.tla's Restart allows.                                           *)
(*  - Unobserved nondeterminism (how many entries an AppendEntries         *)
(*    carries, where a snapshot is cut, which server a membership change   *)
(*    names) is resolved by the observed message or state: TLC tries every *)
(*    choice and keeps those that match.                                   *)
(***************************************************************************)
EXTENDS Raft, TraceData

\* t: the trace being followed (an index into TraceLogs); l: its next line.
VARIABLES t, l
traceVars == <<t, l>>

\* The registers 1..Len(TraceLens) hold the furthest line reached per trace.
ASSUME \A k \in 1..Len(TraceLens) : TLCSet(k, 0)

\* The one client value: the trace does not log payloads.
TheValue == CHOOSE v \in Value : TRUE

----
\* Decoding.  TraceData holds the traces as flat tuples of integers (SANY
\* parses those far faster than records; checker/conformance.py documents
\* the layout): TraceEventInts (TraceEventWidth integers per line),
\* TraceMsgInts (TraceMsgWidth per distinct message), TraceStateInts
\* (TraceStateWidth per distinct state), TraceEntryInts (TraceEntryWidth per
\* entry), TraceConfigs (distinct member sets).  The
\* decoding below turns them into records once (TraceLogs is a constant),
\* with messages already in the spec's vocabulary; the table above is the
\* mapping it implements.

EvInt(k, f)  == TraceEventInts[k * TraceEventWidth + f]
MsgInt(m, f) == TraceMsgInts[(m - 1) * TraceMsgWidth + f]
EntInt(n, f) == TraceEntryInts[(n - 1) * TraceEntryWidth + f]

DecodeEntry(n) ==
    LET kind == TraceKindNames[EntInt(n, 2)]
    IN  [term  |-> EntInt(n, 1),
         kind  |-> kind,
         value |-> CASE kind = "normal" -> TheValue
                   []   kind = "noop"   -> Nil
                   []   OTHER           -> TraceConfigs[EntInt(n, 3)]]

DecodeMsg(m) ==
    LET type == TraceMsgTypeNames[MsgInt(m, 1)]
        src  == MsgInt(m, 2)
        dst  == MsgInt(m, 3)
        term == MsgInt(m, 4)
        F(f) == MsgInt(m, 4 + f)
    IN  CASE type \in {"RequestVote", "PreVote"} ->
                [mtype |-> type, mterm |-> term, msource |-> src, mdest |-> dst,
                 mlastLogTerm |-> F(1), mlastLogIndex |-> F(2)]
        []   type \in {"RequestVoteResponse", "PreVoteResponse"} ->
                [mtype |-> type, mterm |-> term, msource |-> src, mdest |-> dst,
                 mvoteGranted |-> F(1) = 1]
        []   type = "AppendEntries" ->
                [mtype |-> type, mterm |-> term, msource |-> src, mdest |-> dst,
                 mprevLogIndex |-> F(1), mprevLogTerm |-> F(2),
                 mcommitIndex |-> F(3),
                 mentries |-> [k \in 1..F(5) |-> DecodeEntry(F(4) + k - 1)]]
        []   type = "AppendEntriesResponse" ->
                [mtype |-> type, mterm |-> term, msource |-> src, mdest |-> dst,
                 msuccess |-> F(1) = 1, mmatchIndex |-> F(2)]
        []   type = "InstallSnapshot" ->
                [mtype |-> type, mterm |-> term, msource |-> src, mdest |-> dst,
                 msnapshotIndex |-> F(1), msnapshotTerm |-> F(2),
                 msnapshotConfig |-> TraceConfigs[F(3)]]
        []   OTHER ->
                [mtype |-> type, mterm |-> term, msource |-> src, mdest |-> dst,
                 mmatchIndex |-> F(1)]

StInt(x, f)  == TraceStateInts[(x - 1) * TraceStateWidth + f]

\* State x of the table as the observed values in spec terms.
DecodeState(x) ==
    LET packed == StInt(x, 2)
        role   == packed % TraceRoleRadix
        vote   == (packed \div TraceRoleRadix) % TraceVoteRadix
        conf   == packed \div (TraceRoleRadix * TraceVoteRadix)
    IN  [term           |-> StInt(x, 1),
         role           |-> TraceRoleNames[role],
         voted_for      |-> IF vote = 0 THEN Nil ELSE vote,
         commit_index   |-> StInt(x, 3),
         last_index     |-> StInt(x, 4),
         last_term      |-> StInt(x, 5),
         snapshot_index |-> StInt(x, 6),
         snapshot_term  |-> StInt(x, 7),
         config         |-> TraceConfigs[conf]]

\* Line k (0-based over the batch) as [action, node, msg, state]; msg is the
\* spec's message record; state holds the observed values in spec terms (a
\* dummy for the network's lines, which observe no node).
DecodeEvent(k) ==
    LET head == EvInt(k, 1)
        m    == EvInt(k, 2)
        x    == EvInt(k, 3)
    IN  [action |-> TraceActionNames[head % TraceActionRadix],
         node   |-> head \div TraceActionRadix,
         msg    |-> IF m = 0 THEN [mtype |-> "None"] ELSE DecodeMsg(m),
         state  |-> IF x = 0 THEN [none |-> TRUE] ELSE DecodeState(x)]

TraceLogs ==
    [x \in 1..Len(TraceLens) |->
        [j \in 1..TraceLens[x] |-> DecodeEvent(TraceStarts[x] + j - 1)]]

TraceLog == TraceLogs[t]

----
SendActions == {"RequestVote", "PreVote", "AppendEntries", "SendSnapshot"}
ReceiveActions == {"UpdateTerm", "HandleRequestVoteRequest",
                   "HandlePreVoteRequest", "HandlePreVoteResponse",
                   "DropVoteRequestInLease", "HandleStaleAppendEntries",
                   "HandleRequestVoteResponse", "HandleAppendEntriesRequest",
                   "HandleAppendEntriesResponse", "HandleInstallSnapshotRequest",
                   "HandleInstallSnapshotResponse", "DropStaleMessage"}
NetworkActions == {"DropMessage", "DuplicateMessage"}

\* The logged message is in the bag, addressed to the line's node (a
\* network line may also name a message still in its sender's outbox: see
\* Raft.tla's DuplicateMessage).
InFlight(e) ==
    /\ \/ e.msg \in DOMAIN messages
       \/ /\ e.action \in NetworkActions
          /\ e.msg \in DOMAIN outbox[e.msg.msource]
    /\ e.action \in ReceiveActions => e.msg.mdest = e.node

----
\* One IsX per trace action: the spec's own action, with the parameters the
\* line names.  Receives first require the logged message to be in flight.

IsRestart(e)            == Restart(e.node)
IsPersistState(e)       == PersistState(e.node)
IsTimeout(e)            == Timeout(e.node)
IsRequestVote(e)        == RequestVote(e.node, e.msg.mdest)
IsStartPreVote(e)       == StartPreVote(e.node)
IsPreVote(e)            == PreVote(e.node, e.msg.mdest)
IsBecomeCandidate(e)    == BecomeCandidate(e.node)
IsStepDown(e)           == StepDown(e.node)
IsHandlePreVoteRequest(e) ==
    InFlight(e) /\ HandlePreVoteRequest(e.node, e.msg)
IsHandlePreVoteResponse(e) ==
    InFlight(e) /\ HandlePreVoteResponse(e.node, e.msg)
IsDropVoteRequestInLease(e) ==
    InFlight(e) /\ DropVoteRequestInLease(e.node, e.msg)
IsHandleStaleAppendEntries(e) ==
    InFlight(e) /\ HandleStaleAppendEntries(e.node, e.msg)
IsBecomeLeader(e)       == BecomeLeader(e.node)
IsClientRequest(e)      == ClientRequest(e.node, TheValue)
IsChangeMembership(e)   == \E s \in Server : ChangeMembership(e.node, s)
IsAdvanceCommitIndex(e) == AdvanceCommitIndex(e.node)
IsAppendEntries(e)      == AppendEntries(e.node, e.msg.mdest)
IsSendSnapshot(e)       == SendSnapshot(e.node, e.msg.mdest)
IsSnapshot(e)           == Snapshot(e.node)
IsUpdateTerm(e)         == InFlight(e) /\ UpdateTerm(e.node, e.msg)
IsHandleRequestVoteRequest(e) ==
    InFlight(e) /\ HandleRequestVoteRequest(e.node, e.msg)
IsHandleRequestVoteResponse(e) ==
    InFlight(e) /\ HandleRequestVoteResponse(e.node, e.msg)
IsHandleAppendEntriesRequest(e) ==
    InFlight(e) /\ HandleAppendEntriesRequest(e.node, e.msg)
IsHandleAppendEntriesResponse(e) ==
    InFlight(e) /\ HandleAppendEntriesResponse(e.node, e.msg)
IsHandleInstallSnapshotRequest(e) ==
    InFlight(e) /\ HandleInstallSnapshotRequest(e.node, e.msg)
IsHandleInstallSnapshotResponse(e) ==
    InFlight(e) /\ HandleInstallSnapshotResponse(e.node, e.msg)
IsDropStaleMessage(e)   == InFlight(e) /\ DropStaleMessage(e.node, e.msg)
IsDropMessage(e)        == InFlight(e) /\ DropMessage(e.msg)
IsDuplicateMessage(e)   == InFlight(e) /\ DuplicateMessage(e.msg)

\* The spec action a line names (unconstrained by the line's state).
SpecStep(e) ==
    CASE e.action = "Restart"                       -> IsRestart(e)
    []   e.action = "PersistState"                  -> IsPersistState(e)
    []   e.action = "Timeout"                       -> IsTimeout(e)
    []   e.action = "RequestVote"                   -> IsRequestVote(e)
    []   e.action = "BecomeLeader"                  -> IsBecomeLeader(e)
    []   e.action = "ClientRequest"                 -> IsClientRequest(e)
    []   e.action = "ChangeMembership"              -> IsChangeMembership(e)
    []   e.action = "AdvanceCommitIndex"            -> IsAdvanceCommitIndex(e)
    []   e.action = "AppendEntries"                 -> IsAppendEntries(e)
    []   e.action = "SendSnapshot"                  -> IsSendSnapshot(e)
    []   e.action = "Snapshot"                      -> IsSnapshot(e)
    []   e.action = "UpdateTerm"                    -> IsUpdateTerm(e)
    []   e.action = "HandleRequestVoteRequest"      -> IsHandleRequestVoteRequest(e)
    []   e.action = "HandleRequestVoteResponse"     -> IsHandleRequestVoteResponse(e)
    []   e.action = "HandleAppendEntriesRequest"    -> IsHandleAppendEntriesRequest(e)
    []   e.action = "HandleAppendEntriesResponse"   -> IsHandleAppendEntriesResponse(e)
    []   e.action = "HandleInstallSnapshotRequest"  -> IsHandleInstallSnapshotRequest(e)
    []   e.action = "HandleInstallSnapshotResponse" -> IsHandleInstallSnapshotResponse(e)
    []   e.action = "DropStaleMessage"              -> IsDropStaleMessage(e)
    []   e.action = "StartPreVote"                  -> IsStartPreVote(e)
    []   e.action = "PreVote"                       -> IsPreVote(e)
    []   e.action = "BecomeCandidate"               -> IsBecomeCandidate(e)
    []   e.action = "HandlePreVoteRequest"          -> IsHandlePreVoteRequest(e)
    []   e.action = "HandlePreVoteResponse"         -> IsHandlePreVoteResponse(e)
    []   e.action = "StepDown"                      -> IsStepDown(e)
    []   e.action = "DropVoteRequestInLease"        -> IsDropVoteRequestInLease(e)
    []   e.action = "HandleStaleAppendEntries"      -> IsHandleStaleAppendEntries(e)
    []   e.action = "DropMessage"                   -> IsDropMessage(e)
    []   e.action = "DuplicateMessage"              -> IsDuplicateMessage(e)

\* LastIndex, LastTerm and Config of server i in the successor state.  Written
\* over primed variables: priming `LastIndex(e.node)` would also prime e,
\* i.e. the trace line, which is read from the variables t and l.
LastIndexAfter(i) == snapshotIndex'[i] + Len(log'[i])
LastTermAfter(i) == IF Len(log'[i]) > 0 THEN log'[i][Len(log'[i])].term
                    ELSE snapshotTerm'[i]
ConfigAfter(i) ==
    LET ps == {p \in 1..Len(log'[i]) : log'[i][p].kind = "config"}
    IN  IF ps = {} THEN snapshotConfig'[i] ELSE log'[i][Max(ps)].value

\* Per observed variable, whether the step just taken produced what the line
\* says (evaluated with the successor state bound).
ObservedOK(e) ==
    LET i == e.node
        s == e.state
    IN  [term           |-> currentTerm'[i] = s.term,
         role           |-> state'[i] = s.role,
         voted_for      |-> votedFor'[i] = s.voted_for,
         commit_index   |-> commitIndex'[i] = s.commit_index,
         last_index     |-> LastIndexAfter(i) = s.last_index,
         last_term      |-> LastTermAfter(i) = s.last_term,
         snapshot_index |-> snapshotIndex'[i] = s.snapshot_index,
         snapshot_term  |-> snapshotTerm'[i] = s.snapshot_term,
         config         |-> ConfigAfter(i) = s.config]

\* A send line must add exactly the logged message to the bag, or to the
\* sender's outbox.
SentOK(e) ==
    e.action \in SendActions =>
        \/ messages' = WithMessage(e.msg, messages)
        \/ outbox'[e.node] = WithMessage(e.msg, outbox[e.node])

\* The line's observations hold after the step (ObservedOK as one conjunction,
\* which TLC stops evaluating at the first false conjunct).
StateMatches(e) ==
    LET i == e.node
        s == e.state
    IN  /\ currentTerm'[i] = s.term
        /\ state'[i] = s.role
        /\ votedFor'[i] = s.voted_for
        /\ commitIndex'[i] = s.commit_index
        /\ snapshotIndex'[i] = s.snapshot_index
        /\ snapshotTerm'[i] = s.snapshot_term
        /\ LastIndexAfter(i) = s.last_index
        /\ LastTermAfter(i) = s.last_term
        /\ ConfigAfter(i) = s.config

Matches(e) ==
    /\ SentOK(e)
    /\ e.action \notin NetworkActions => StateMatches(e)

\* The names of the observations the step did not produce ("" where it did).
Mismatches(e) ==
    LET ok == IF e.action \in NetworkActions THEN [none |-> TRUE]
              ELSE ObservedOK(e)
        names == <<"term", "role", "voted_for", "commit_index", "last_index",
                   "last_term", "snapshot_index", "snapshot_term", "config">>
    IN  [k \in 1..Len(names) |->
            IF names[k] \in DOMAIN ok /\ ~ok[names[k]] THEN names[k] ELSE ""]
        \o <<IF SentOK(e) THEN "" ELSE "msg">>

----
TraceInit ==
    /\ Init
    /\ t \in 1..Len(TraceLens)
    /\ l = 1

\* Line l of trace t is a step of the spec.
TraceStep ==
    /\ l <= Len(TraceLog)
    /\ SpecStep(TraceLog[l])
    /\ Matches(TraceLog[l])
    /\ l' = l + 1
    /\ UNCHANGED t

\* Diagnosis of a stuck line (only when TraceStuckAt[t] = l): print what the
\* spec's action could produce and which observations it missed, and
\* whether the line's message was in flight.  Never yields a successor.
Diagnose ==
    /\ TraceStuckAt[t] = l
    /\ l <= Len(TraceLog)
    /\ LET e == TraceLog[l] IN
       \/ /\ e.action \in ReceiveActions \cup NetworkActions
          /\ ~InFlight(e)
          /\ PrintT(<<"disabled", t, l, "its message is not in flight to the node">>)
          /\ FALSE
       \/ /\ e.action \in ReceiveActions \ {"UpdateTerm", "DropStaleMessage",
                                               "HandlePreVoteRequest",
                                               "HandlePreVoteResponse",
                                               "DropVoteRequestInLease",
                                               "HandleStaleAppendEntries"}
          /\ InFlight(e)
          /\ e.msg.mterm /= currentTerm[e.node]
          /\ PrintT(<<"disabled", t, l, "the message's term is not the node's current term">>)
          /\ FALSE
       \/ /\ SpecStep(e)
          /\ PrintT(<<"diag", t, l, Mismatches(e)>>)
          /\ FALSE

TraceNext == TraceStep \/ Diagnose

TraceSpec == TraceInit /\ [][TraceNext]_<<vars, traceVars>>

\* Fingerprint only the position in the trace (TraceRaftBatch.cfg: VIEW).  Exact
\* because following a trace is deterministic: every choice the spec leaves
\* open (the entries of an AppendEntries, the index of a Snapshot, the server
\* of a membership change; client values are one model value) is fixed by
\* the line's message or state, so at most one spec state sits at (t, l).
\* One exception: a Restart line observes the term and vote the node adopts,
\* not the superblock's (durable) ones, which a crash may have left at either
\* the old or the new value when the log's last term is newer.  A merge there
\* can only make a trace look stuck, never accepted: the diagnosis run below
\* confirms every rejection without a VIEW.
\* The diagnosis run (TraceRaftDiag.cfg) has no VIEW, so a rejection is
\* confirmed by a search that merges nothing.
TraceView == <<t, l>>

----
\* Acceptance, read by checker/conformance.py.

\* Single trace: violated (TLC exit code 12) iff the whole trace matched.
NotAccepted == l <= Len(TraceLog)

\* Batches: print the furthest line reached per trace, and each accepted trace.
Progress ==
    IF l > TLCGet(t)
    THEN TLCSet(t, l) /\ PrintT(<<"reached", t, l>>)
    ELSE TRUE

AcceptedReport == l <= Len(TraceLog) \/ PrintT(<<"accepted", t>>)

=============================================================================
