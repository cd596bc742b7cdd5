%% portcullis_epmd: distribution without epmd, for nodes whose only path to each other is a pair of
%% Portcullis sidecars (client mode on the dialing host, server mode in front of the listening node).
%%
%% Start every node with
%%   -start_epmd false -epmd_module portcullis_epmd
%%   -kernel inet_dist_listen_min P inet_dist_listen_max P     (this node's own port, on loopback:)
%%   -kernel inet_dist_use_interface {127,0,0,1}
%%   -portcullis_epmd NODE PORT [NODE PORT ...]
%% where each NODE PORT pair says "to reach NODE, dial 127.0.0.1:PORT", i.e. the local client-mode sidecar
%% whose target is NODE's server-mode sidecar. NODE is `name@host` (what you pass to rpc:call) or just
%% `name`, which then matches that name on any host. Nodes not listed cannot be reached: there is no
%% fallback to epmd or to the real address, so nothing leaves this host in plaintext by accident.
%%
%% Implements the erl_epmd callback interface (OTP 23 and later; see erl_epmd(3) and the ERTS User's
%% Guide, "How to implement an Alternative Node Discovery for Erlang Distribution").
-module(portcullis_epmd).

-export([start_link/0, register_node/2, register_node/3, listen_port_please/2,
         port_please/2, port_please/3, address_please/3, names/0, names/1, routes/0]).

%% Distribution protocol version announced for every peer (OTP 23+ speaks 6).
-define(DIST_VERSION, 6).

%% No process of our own: the table is read from the command line on each lookup.
start_link() -> ignore.

%% There is no epmd to register with. The creation number tells incarnations of a node apart;
%% any value from 1 up is valid, and a random one keeps restarts distinct.
register_node(Name, Port) -> register_node(Name, Port, inet_tcp).
register_node(_Name, _Port, _Driver) -> {ok, rand:uniform(16#fffffff0) + 3}.

%% {ok, 0}: listen where -kernel inet_dist_listen_min/max say (one fixed port).
listen_port_please(_Name, _Host) -> {ok, 0}.

%% The address and port of a peer in one answer (so port_please/3 is not called by OTP 23+).
address_please(Name, Host, _AddressFamily) ->
    case lookup(Name, Host) of
        {ok, Port} -> {ok, {127, 0, 0, 1}, Port, ?DIST_VERSION};
        error -> {error, nxdomain}
    end.

port_please(Name, Host) -> port_please(Name, Host, infinity).
port_please(Name, Host, _Timeout) ->
    case lookup(Name, host_string(Host)) of
        {ok, Port} -> {port, Port, ?DIST_VERSION};
        error -> noport
    end.

%% `net_adm:names()` has nothing to list without epmd.
names() -> names(localhost).
names(_Host) -> {error, address}.

%% [{"b@127.0.0.1", 19201}, ...] as given by -portcullis_epmd.
routes() ->
    case init:get_argument(portcullis_epmd) of
        {ok, Lists} -> pairs(lists:append(Lists));
        error -> []
    end.

pairs([Node, Port | Rest]) -> [{Node, list_to_integer(Port)} | pairs(Rest)];
pairs([Odd]) -> error({portcullis_epmd, missing_port_for, Odd});
pairs([]) -> [].

lookup(Name, Host) ->
    Routes = routes(),
    Full = to_list(Name) ++ "@" ++ host_string(Host),
    case lists:keyfind(Full, 1, Routes) of
        {_, Port} -> {ok, Port};
        false ->
            case lists:keyfind(to_list(Name), 1, Routes) of
                {_, Port} -> {ok, Port};
                false -> error
            end
    end.

host_string(Host) when is_tuple(Host) -> inet:ntoa(Host);
host_string(Host) -> to_list(Host).

to_list(A) when is_atom(A) -> atom_to_list(A);
to_list(L) when is_list(L) -> L.
