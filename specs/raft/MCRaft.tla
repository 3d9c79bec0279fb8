------------------------------- MODULE MCRaft -------------------------------
(***************************************************************************)
(* Bounded models of Raft for TLC.  The protocol is Raft.tla, unchanged;   *)
(* this module bounds it with state guards on the actions (so TLC does not *)
(* even generate states beyond the bounds) and a CONSTRAINT on the network.*)
(* Each MCRaft*.cfg picks bounds that turn features on or off: a bound of  *)
(* 0 disables restarts, snapshots or membership changes.                   *)
(*                                                                         *)
(* AtomicPersist = TRUE in every model except the crash models: they      *)
(* check durability (PersistState, partial persists at Restart); the      *)
(* others keep their state counts.                                         *)
(*                                                                         *)
(* PreVoteOn and CheckQuorumOn pick the election style: TRUE/TRUE is the  *)
(* core's default (StartPreVote, PreVote, BecomeCandidate; StepDown and    *)
(* DropVoteRequestInLease); FALSE/FALSE the classic Raft of Figure 2      *)
(* (Timeout), which the models of the other features use to keep their    *)
(* state counts.                                                          *)
(*                                                                         *)
(* mcBudget counts the bounded events that leave no trace in the protocol  *)
(* state (restarts, snapshots, membership changes, duplications).          *)
(***************************************************************************)
EXTENDS Raft

\* Highest term a server may reach by timing out.
CONSTANT MaxTerm
\* Highest log index (counting compacted entries) a leader may append at.
CONSTANT MaxLogLen
\* Most copies of one message in flight at once.
CONSTANT MaxMsgCount
\* Most distinct messages in flight at once.
CONSTANT MaxInFlight
\* Most entries in one AppendEntries request.
CONSTANT MaxBatch
\* Most restarts, snapshots, membership changes, duplications in a behaviour.
CONSTANT MaxRestarts, MaxSnapshots, MaxMembershipChanges, MaxDuplicates

\* TRUE: elections start with a pre-vote (Timeout disabled); FALSE: classic.
CONSTANT PreVoteOn
\* TRUE: leaders may step down (StepDown) and servers may drop vote requests
\* of a higher term (DropVoteRequestInLease).
CONSTANT CheckQuorumOn

ASSUME PreVoteOn \in BOOLEAN /\ CheckQuorumOn \in BOOLEAN
ASSUME MaxTerm \in Nat /\ MaxLogLen \in Nat /\ MaxMsgCount \in Nat \ {0}
ASSUME MaxInFlight \in Nat /\ MaxBatch \in Nat
ASSUME MaxRestarts \in Nat /\ MaxSnapshots \in Nat
ASSUME MaxMembershipChanges \in Nat /\ MaxDuplicates \in Nat

VARIABLE mcBudget
mcVars == <<vars, mcBudget>>

\* Spend one unit of the budget `key`, if any is left.
Spend(key) ==
    /\ mcBudget[key] > 0
    /\ mcBudget' = [mcBudget EXCEPT ![key] = @ - 1]

\* The distinct messages in flight or waiting in an outbox.
Pending == DOMAIN messages \cup UNION {DOMAIN outbox[i] : i \in Server}

\* Room for one more distinct message.
CanSend == Cardinality(Pending) < MaxInFlight

\* Substituted for Raft!BatchSizes in every config.
MCBatchSizes(i, j) ==
    0..Min({MaxBatch, LastIndex(i) + 1 - nextIndex[i][j]})

MCInit ==
    /\ Init
    /\ mcBudget = [restarts |-> MaxRestarts,
                   snapshots |-> MaxSnapshots,
                   changes |-> MaxMembershipChanges,
                   duplicates |-> MaxDuplicates]

\* One guarded wrapper per Raft action, named MC<action>, so that TLC's
\* counterexamples name the spec action each step took.
MCRestart(i) == Restart(i) /\ Spend("restarts")
\* Only a persist that changes something (others are stuttering steps).
MCPersistState(i) ==
    /\ \/ durable[i] /= Volatile(i)
       \/ outbox[i] /= EmptyBag
    /\ PersistState(i) /\ UNCHANGED mcBudget
MCTimeout(i) ==
    ~PreVoteOn /\ currentTerm[i] < MaxTerm /\ Timeout(i) /\ UNCHANGED mcBudget
MCStartPreVote(i) ==
    PreVoteOn /\ currentTerm[i] < MaxTerm /\ StartPreVote(i) /\ UNCHANGED mcBudget
MCPreVote(i, j) == CanSend /\ PreVote(i, j) /\ UNCHANGED mcBudget
MCBecomeCandidate(i) ==
    currentTerm[i] < MaxTerm /\ BecomeCandidate(i) /\ UNCHANGED mcBudget
MCStepDown(i) == CheckQuorumOn /\ StepDown(i) /\ UNCHANGED mcBudget
MCRequestVote(i, j) == CanSend /\ RequestVote(i, j) /\ UNCHANGED mcBudget
MCBecomeLeader(i) ==
    LastIndex(i) < MaxLogLen /\ BecomeLeader(i) /\ UNCHANGED mcBudget
MCClientRequest(i, v) ==
    LastIndex(i) < MaxLogLen /\ ClientRequest(i, v) /\ UNCHANGED mcBudget
MCChangeMembership(i, s) ==
    LastIndex(i) < MaxLogLen /\ ChangeMembership(i, s) /\ Spend("changes")
MCAdvanceCommitIndex(i) == AdvanceCommitIndex(i) /\ UNCHANGED mcBudget
MCAppendEntries(i, j) == CanSend /\ AppendEntries(i, j) /\ UNCHANGED mcBudget
MCSendSnapshot(i, j) == CanSend /\ SendSnapshot(i, j) /\ UNCHANGED mcBudget
MCSnapshot(i) == Snapshot(i) /\ Spend("snapshots")
\* Message receipt is quantified inside each wrapper: TLC names a step by
\* the operator only when the existential is over a constant set.
MCUpdateTerm ==
    \E m \in DOMAIN messages :
        UpdateTerm(m.mdest, m) /\ UNCHANGED mcBudget
MCDropStaleMessage ==
    \E m \in DOMAIN messages :
        DropStaleMessage(m.mdest, m) /\ UNCHANGED mcBudget
MCDropVoteRequestInLease ==
    \E m \in DOMAIN messages :
        CheckQuorumOn /\ DropVoteRequestInLease(m.mdest, m) /\ UNCHANGED mcBudget
MCHandleStaleAppendEntries ==
    \E m \in DOMAIN messages :
        /\ PreVoteOn \/ CheckQuorumOn
        /\ HandleStaleAppendEntries(m.mdest, m) /\ UNCHANGED mcBudget
MCHandlePreVoteRequest ==
    \E m \in DOMAIN messages :
        HandlePreVoteRequest(m.mdest, m) /\ UNCHANGED mcBudget
MCHandlePreVoteResponse ==
    \E m \in DOMAIN messages :
        HandlePreVoteResponse(m.mdest, m) /\ UNCHANGED mcBudget
MCHandleRequestVoteRequest ==
    \E m \in DOMAIN messages :
        HandleRequestVoteRequest(m.mdest, m) /\ UNCHANGED mcBudget
MCHandleRequestVoteResponse ==
    \E m \in DOMAIN messages :
        HandleRequestVoteResponse(m.mdest, m) /\ UNCHANGED mcBudget
MCHandleAppendEntriesRequest ==
    \E m \in DOMAIN messages :
        HandleAppendEntriesRequest(m.mdest, m) /\ UNCHANGED mcBudget
MCHandleAppendEntriesResponse ==
    \E m \in DOMAIN messages :
        HandleAppendEntriesResponse(m.mdest, m) /\ UNCHANGED mcBudget
MCHandleInstallSnapshotRequest ==
    \E m \in DOMAIN messages :
        HandleInstallSnapshotRequest(m.mdest, m) /\ UNCHANGED mcBudget
MCHandleInstallSnapshotResponse ==
    \E m \in DOMAIN messages :
        HandleInstallSnapshotResponse(m.mdest, m) /\ UNCHANGED mcBudget
MCDuplicateMessage ==
    \E m \in DOMAIN messages :
        messages[m] < MaxMsgCount /\ DuplicateMessage(m) /\ Spend("duplicates")
MCDropMessage ==
    \E m \in DOMAIN messages :
        DropMessage(m) /\ UNCHANGED mcBudget

MCNext ==
    \/ \E i \in Server : MCRestart(i)
    \/ \E i \in Server : MCPersistState(i)
    \/ \E i \in Server : MCTimeout(i)
    \/ \E i \in Server : MCStartPreVote(i)
    \/ \E i, j \in Server : MCPreVote(i, j)
    \/ \E i \in Server : MCBecomeCandidate(i)
    \/ \E i \in Server : MCStepDown(i)
    \/ \E i, j \in Server : MCRequestVote(i, j)
    \/ \E i \in Server : MCBecomeLeader(i)
    \/ \E i \in Server, v \in Value : MCClientRequest(i, v)
    \/ \E i, s \in Server : MCChangeMembership(i, s)
    \/ \E i \in Server : MCAdvanceCommitIndex(i)
    \/ \E i, j \in Server : MCAppendEntries(i, j)
    \/ \E i, j \in Server : MCSendSnapshot(i, j)
    \/ \E i \in Server : MCSnapshot(i)
    \/ MCUpdateTerm
    \/ MCDropStaleMessage
    \/ MCDropVoteRequestInLease
    \/ MCHandleStaleAppendEntries
    \/ MCHandlePreVoteRequest
    \/ MCHandlePreVoteResponse
    \/ MCHandleRequestVoteRequest
    \/ MCHandleRequestVoteResponse
    \/ MCHandleAppendEntriesRequest
    \/ MCHandleAppendEntriesResponse
    \/ MCHandleInstallSnapshotRequest
    \/ MCHandleInstallSnapshotResponse
    \/ MCDuplicateMessage
    \/ MCDropMessage

MCSpec == MCInit /\ [][MCNext]_mcVars

\* Replies may push the network past the bounds that guard the sends.
MCConstraint ==
    /\ Cardinality(Pending) <= MaxInFlight
    /\ \A m \in DOMAIN messages : messages[m] <= MaxMsgCount
    /\ \A i \in Server : \A m \in DOMAIN outbox[i] : outbox[i][m] <= MaxMsgCount

\* What TLC fingerprints: every variable, except that candidate state is
\* seen only on (pre-)candidates and leader state only on leaders.  Both are
\* rewritten before they are read again (Timeout resets the votes,
\* BecomeLeader resets nextIndex and matchIndex), so states that differ only
\* in stale values have the same futures.
MCView ==
    <<messages, committed, serverVars, logVars, snapshotVars, persistVars,
      mcBudget,
      [i \in Server |-> IF state[i] \in {Candidate, PreCandidate}
                        THEN <<votesResponded[i], votesGranted[i]>>
                        ELSE << >>],
      [i \in Server |-> IF state[i] = Leader
                        THEN <<nextIndex[i], matchIndex[i]>>
                        ELSE << >>]>>

\* Servers (and values) are interchangeable when every server starts in the
\* initial configuration.
MCSymmetry == Permutations(Server) \cup Permutations(Value)

\* With servers outside the initial configuration only permutations that
\* keep InitConfig in place are symmetries.
MCSymmetryMembership ==
    Permutations(InitConfig) \cup Permutations(Server \ InitConfig)
    \cup Permutations(Value)

\* A deliberately wrong quorum (any one member) for MCRaftBugQuorum.cfg: TLC
\* must find an ElectionSafety violation, which shows the invariants bite.
MCBuggyIsQuorum(S, c) == S \cap c /= {}

\* Reachability: a pre-vote is refused by enough servers that it cannot lead
\* to an election (the pre-candidate's term never moved).
NR_PreVoteRefused ==
    \A i \in Server :
        state[i] = PreCandidate =>
            ~IsQuorum(votesResponded[i] \ votesGranted[i], Config(i))

\* A mutant that sends a vote before it is persisted (no outbox) for
\* MCRaftBugVoteBeforePersist.cfg: a crash then loses the vote, the server
\* votes again in the same term, and TLC must find two leaders of one term.
MCBuggyReplyVote(response, request) ==
    /\ messages' = WithMessage(response, WithoutMessage(request, messages))
    /\ UNCHANGED outbox

=============================================================================
