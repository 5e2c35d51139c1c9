// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

interface IERC20 {
    function transferFrom(address from, address to, uint256 value) external returns (bool);
}

/// Test helper: pays one recipient in two Transfer logs within a single transaction (as a batching
/// wallet or router would), so verifiers are tested on summing every matching log. Local chains only.
contract SplitPayer {
    function payInTwo(IERC20 token, address to, uint256 first, uint256 second) external {
        require(token.transferFrom(msg.sender, to, first), "first transfer failed");
        require(token.transferFrom(msg.sender, to, second), "second transfer failed");
    }
}
