%% dist_check: the checks examples/erlang/run.sh and tests/e2e/test_systems_erlang.py run on two nodes
%% connected only through Portcullis sidecar pairs. Each result is one line on stdout:
%%   PASS <check> <detail>     or     FAIL <check> <detail>
%% and the node stops with init:stop(0) when every check passed, init:stop(1) otherwise.
%%
%% Node a is started first and waits. Node b dials a (b's client sidecar -> a's server sidecar), checks
%% rpc and a 1 MB echo b->a, then tells a to go. a drops that connection, dials b itself (a's client
%% sidecar -> b's server sidecar), checks rpc and a 1 MB echo a->b, and stops b, then itself.
%% So each direction is exercised on a connection it initiated: both sidecar pairs carry traffic.
-module(dist_check).
-export([a/1, b/1, intruder/1, echo_loop/0]).

-define(MB, 1048576).
-define(WAIT, 60000).

%% a(["b@127.0.0.1", "19102"]): peer node and the local port we expect our connection to it to use.
a([Peer, ExpectPort]) ->
    register(dist_check_ctl, self()),
    start_echo(),
    io:format("READY ~s~n", [node()]),
    B = list_to_atom(Peer),
    R0 = receive {go, B, Results} -> Results after ?WAIT -> [{fail, "go", "no go from " ++ Peer}] end,
    [report(R) || {_, "go", _} = R <- R0],   % b printed its own results
    own_connection(B, list_to_integer(ExpectPort), 3),
    Rs = checks(B, list_to_integer(ExpectPort)),
    [report(R) || R <- Rs],
    rpc:call(B, init, stop, [0], 5000),   % returns ok at once; b then shuts down
    finish(R0 ++ Rs).

%% Drops b's connection and dials b through our own client sidecar. b's node may dial us again first when it
%% sees the connection drop; then the connection is b's once more: drop it and dial again (at most Tries times;
%% the via-sidecar check reports a connection that still is not ours).
own_connection(B, ExpectPort, Tries) ->
    erlang:disconnect_node(B),
    wait_until(fun() -> not lists:member(B, nodes()) end, 10000),
    net_kernel:connect_node(B),
    case net_kernel:node_info(B, address) of
        {ok, {net_address, {_, ExpectPort}, _, _, _}} -> ok;
        _ when Tries > 1 -> timer:sleep(300), own_connection(B, ExpectPort, Tries - 1);
        _ -> ok
    end.

%% b(["a@127.0.0.1", "19101"])
b([Peer, ExpectPort]) ->
    start_echo(),
    io:format("READY ~s~n", [node()]),
    A = list_to_atom(Peer),
    Connected = wait_until(fun() -> net_kernel:connect_node(A) end, 30000),
    Rs = case Connected of
             true -> checks(A, list_to_integer(ExpectPort));
             false -> [{fail, "connect", "could not connect to " ++ Peer}]
         end,
    [report(R) || R <- Rs],
    {dist_check_ctl, A} ! {go, node(), Rs},
    %% a stops us with init:stop(0) once its own checks are done; stop on our own if that never comes.
    receive never -> ok after 2 * ?WAIT -> ok end,
    finish([{fail, "stop", "a never stopped us"} | Rs]).

%% intruder(["b@127.0.0.1"]): a node with the right cookie whose sidecar presents a certificate the peer's
%% sidecar does not admit. Passes when the distribution connection is never established.
intruder([Peer]) ->
    P = list_to_atom(Peer),
    T0 = erlang:monotonic_time(millisecond),
    Tries = [net_kernel:connect_node(P) || _ <- lists:seq(1, 3)],
    Ms = erlang:monotonic_time(millisecond) - T0,
    R = case lists:member(true, Tries) of
            false -> {pass, "refused " ++ atom_to_list(node()) ++ "->" ++ Peer,
                      lists:flatten(io_lib:format("net_kernel:connect_node(~s) = false, 3 tries in ~b ms "
                                                  "(right cookie, certificate not admitted)", [Peer, Ms]))};
            true -> {fail, "refused " ++ atom_to_list(node()) ++ "->" ++ Peer,
                     "connected although its certificate is not admitted"}
        end,
    report(R),
    finish([R]).

checks(Peer, ExpectPort) ->
    Dir = atom_to_list(node()) ++ "->" ++ atom_to_list(Peer),
    Node = check("rpc " ++ Dir, fun() ->
                     case rpc:call(Peer, erlang, node, [], 15000) of
                         Peer -> {ok, io_lib:format("rpc:call(~s, erlang, node, []) = ~s", [Peer, Peer])};
                         Other -> {error, io_lib:format("~p", [Other])}
                     end end),
    Release = check("rpc-otp-release " ++ Dir, fun() ->
                     case rpc:call(Peer, erlang, system_info, [otp_release], 15000) of
                         L when is_list(L) -> {ok, "peer runs OTP " ++ L};
                         Other -> {error, io_lib:format("~p", [Other])}
                     end end),
    Echo = check("echo-1MB " ++ Dir, fun() ->
                     Bin = payload(?MB),
                     T0 = erlang:monotonic_time(millisecond),
                     {portcullis_echo, Peer} ! {echo, self(), Bin},
                     receive
                         {echoed, Back} when Back =:= Bin ->
                             {ok, io_lib:format("~b bytes sent and returned identical in ~b ms",
                                                [byte_size(Bin), erlang:monotonic_time(millisecond) - T0])};
                         {echoed, Back} -> {error, io_lib:format("returned ~b bytes that differ", [byte_size(Back)])}
                     after 15000 -> {error, "no echo within 15 s"}
                     end end),
    Path = check("via-sidecar " ++ Dir, fun() ->
                     case net_kernel:node_info(Peer, address) of
                         {ok, {net_address, {_, Port} = Addr, _, _, _}} when Port =:= ExpectPort ->
                             {ok, io_lib:format("connection to ~s goes to ~s:~b (the local client sidecar)",
                                                [Peer, inet:ntoa(element(1, Addr)), Port])};
                         Other -> {error, io_lib:format("~p (expected port ~b)", [Other, ExpectPort])}
                     end end),
    [Node, Release, Echo, Path].

check(Name, F) ->
    try F() of
        {ok, Detail} -> {pass, Name, lists:flatten(Detail)};
        {error, Detail} -> {fail, Name, lists:flatten(Detail)}
    catch C:E -> {fail, Name, lists:flatten(io_lib:format("~p:~p", [C, E]))}
    end.

report({pass, Name, Detail}) -> io:format("PASS ~s ~s~n", [Name, Detail]);
report({fail, Name, Detail}) -> io:format("FAIL ~s ~s~n", [Name, Detail]).

finish(Results) ->
    case [R || {fail, _, _} = R <- Results] of
        [] -> init:stop(0);
        _ -> init:stop(1)
    end.

start_echo() ->
    register(portcullis_echo, spawn(?MODULE, echo_loop, [])).

echo_loop() ->
    receive {echo, From, Bin} -> From ! {echoed, Bin} end,
    echo_loop().

%% 1 MB that does not compress and is not all one byte (no crypto app needed).
payload(N) ->
    rand:seed(exsss, {1, 2, 3}),
    << <<(rand:uniform(256) - 1)>> || _ <- lists:seq(1, N) >>.

wait_until(F, Timeout) when Timeout =< 0 -> F();
wait_until(F, Timeout) ->
    case F() of
        true -> true;
        _ -> timer:sleep(200), wait_until(F, Timeout - 200)
    end.
